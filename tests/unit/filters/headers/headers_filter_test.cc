#include "filters/headers/headers_filter.h"

#include <gtest/gtest.h>

#include "proxy/config/snapshot.h"

namespace infermesh::headers {
namespace {

TEST(HeadersFilter, TemplatesRenderStreamContext) {
  config::RouteConfig route;
  route.name = "api";
  config::ModelConfig model;
  model.name = "llama";
  filter::StreamContext ctx;
  ctx.request_id = "r1";
  ctx.route = &route;
  ctx.target_model = &model;
  ctx.model = "auto";
  ValueTemplate t;
  std::string error;
  ASSERT_TRUE(t.parse("%ROUTE%/%MODEL% (asked %REQUESTED_MODEL%, id %REQUEST_ID%) 100%%", error)) << error;
  EXPECT_EQ(t.render(ctx), "api/llama (asked auto, id r1) 100%");
  ValueTemplate bad;
  EXPECT_FALSE(bad.parse("%NOPE%", error));
  EXPECT_NE(error.find("%NOPE%"), std::string::npos);
  EXPECT_FALSE(bad.parse("50% off", error));
}

TEST(HeadersFilter, EditsApplyRemoveThenSetThenAdd) {
  HeadersConfig c;
  std::string error;
  ASSERT_TRUE(parseHeadersConfig(
      R"({"request":{"remove":["x-debug"],"set":{"x-tenant":"acme"},"add":{"x-tag":"%REQUEST_ID%"}}})", c, error))
      << error;
  filter::StreamContext ctx;
  ctx.request_id = "r9";
  filter::HeaderList h;
  h.add("X-Debug", "1");
  h.add("x-tenant", "spoofed");
  h.add("x-tag", "client");
  c.request.apply(h, ctx);
  EXPECT_FALSE(h.get("x-debug"));
  EXPECT_EQ(h.get("x-tenant"), "acme");
  int tags = 0;
  for (const auto& [n, v] : h.fields()) tags += n == "x-tag";
  EXPECT_EQ(tags, 2);
  EXPECT_TRUE(c.response.empty());
}

TEST(HeadersFilter, BadConfigNamesTheField) {
  HeadersConfig c;
  std::string error;
  EXPECT_FALSE(parseHeadersConfig(R"({"reqest":{}})", c, error));
  EXPECT_NE(error.find("reqest"), std::string::npos);
  EXPECT_FALSE(parseHeadersConfig(R"({"response":{"set":{"x-a":1}}})", c, error));
  EXPECT_EQ(error, "response.set.x-a: must be a string on one line");
  EXPECT_FALSE(parseHeadersConfig(R"({"response":{"set":{"bad name":"v"}}})", c, error));
  EXPECT_FALSE(parseHeadersConfig(R"({"request":{"remove":"x-a"}})", c, error));
  EXPECT_EQ(error, "request.remove: must be a list of header names");
}

}  // namespace
}  // namespace infermesh::headers
