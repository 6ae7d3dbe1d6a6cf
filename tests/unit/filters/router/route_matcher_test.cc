#include "filters/router/route_matcher.h"

#include <gtest/gtest.h>

#include "proxy/config/compiler.h"
#include "proxy/config/yaml_loader.h"

namespace infermesh::router {
namespace {

class RouteMatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config::YamlLoader loader;
    loader.loadText(R"(
apiVersion: infermesh.io/v1
kind: Listener
metadata: {name: a}
spec: {address: '127.0.0.1:0', filters: [{name: router}]}
---
apiVersion: infermesh.io/v1
kind: Listener
metadata: {name: b}
spec: {address: '127.0.0.2:0', filters: [{name: router}]}
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: big}
spec: {aliases: [large], endpoints: [{address: '127.0.0.1:1'}]}
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: small}
spec: {endpoints: [{address: '127.0.0.1:2'}]}
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: canary-header}
spec: {match: {pathPrefix: /v1/, headers: [{name: x-canary, value: "1"}]}, model: small}
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: big-only-on-b}
spec: {match: {listeners: [b], models: [big]}, model: small}
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: exact}
spec: {match: {pathExact: /v1/models}, model: big}
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: tenant-present}
spec: {match: {pathPrefix: /v1/, headers: [{name: x-tenant}]}}
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: api}
spec: {match: {pathPrefix: /v1/}}
)",
                    "routes.yaml");
    auto r = config::compile(loader.resources(), 1);
    ASSERT_TRUE(r.snapshot) << config::joinErrors(loader.errors()) << config::joinErrors(r.errors);
    snap_ = r.snapshot;
  }

  std::string match(std::uint32_t listener, const std::string& target, const std::string& model,
                    std::vector<std::pair<std::string, std::string>> headers = {}) {
    filter::RequestHead req;
    req.method = "POST";
    req.target = target;
    for (auto& [k, v] : headers) req.headers.add(k, v);
    const auto* r = matchRoute(*snap_, listener, req, model);
    return r ? r->name : "<none>";
  }

  std::shared_ptr<const config::Snapshot> snap_;
};

TEST_F(RouteMatcherTest, FirstMatchingRouteWins) {
  EXPECT_EQ(match(0, "/v1/chat/completions", "big"), "api");
  EXPECT_EQ(match(0, "/v1/chat/completions", "big", {{"X-Canary", "1"}}), "canary-header");
  EXPECT_EQ(match(0, "/v1/chat/completions", "big", {{"x-canary", "2"}}), "api");
}

TEST_F(RouteMatcherTest, PathExactIgnoresQueryAndPrefixIsAPrefix) {
  EXPECT_EQ(match(0, "/v1/models?limit=3", ""), "exact");
  EXPECT_EQ(match(0, "/v1/models/extra", ""), "api");
  EXPECT_EQ(match(0, "/v2/models", ""), "<none>");
}

TEST_F(RouteMatcherTest, ModelAndListenerConditions) {
  EXPECT_EQ(match(1, "/v2/x", "big"), "big-only-on-b");
  EXPECT_EQ(match(1, "/v2/x", "large"), "big-only-on-b");  // aliases count
  EXPECT_EQ(match(1, "/v2/x", "small"), "<none>");
  EXPECT_EQ(match(0, "/v2/x", "big"), "<none>");
  EXPECT_EQ(match(1, "/v2/x", "unknown"), "<none>");
  // An earlier route without a model condition still wins over a later one
  // that names the model.
  EXPECT_EQ(match(1, "/v1/chat/completions", "big", {{"x-canary", "1"}}), "canary-header");
}

TEST_F(RouteMatcherTest, HeaderPresenceMatch) {
  EXPECT_EQ(match(0, "/v1/embeddings", "small", {{"x-tenant", "acme"}}), "tenant-present");
}

}  // namespace
}  // namespace infermesh::router
