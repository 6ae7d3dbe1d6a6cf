#include "proxy/config/access_log.h"

#include <gtest/gtest.h>

namespace infermesh::config {
namespace {

AccessLogFormat userAndSeed() {
  AccessLogFormat f;
  f.body_names = {"user", "seed", "stream"};
  f.body_keys = {"user", "seed", "stream"};
  return f;
}

TEST(AccessLogBodyFields, StringsAsTheyAreOtherScalarsAsWritten) {
  std::vector<std::string> v;
  readBodyFields(userAndSeed(), R"({"user":"ana","seed":42,"stream":true,"model":"m"})", v);
  EXPECT_EQ(v, (std::vector<std::string>{"ana", "42", "true"}));
}

TEST(AccessLogBodyFields, AbsentObjectsAndBadBodiesGiveEmptyValues) {
  std::vector<std::string> v;
  readBodyFields(userAndSeed(), R"({"user":{"id":1},"seed":[1]})", v);
  EXPECT_EQ(v, (std::vector<std::string>{"", "", ""}));
  readBodyFields(userAndSeed(), "not json", v);
  EXPECT_EQ(v.size(), 3u);
  // Found by trace_context_fuzz: an empty view (null data) never reaches the parser.
  readBodyFields(userAndSeed(), std::string_view(), v);
  EXPECT_EQ(v, (std::vector<std::string>{"", "", ""}));
}

TEST(AccessLogBodyFields, ValuesAreBounded) {
  std::vector<std::string> v;
  readBodyFields(userAndSeed(), "{\"user\":\"" + std::string(1000, 'a') + "\"}", v);
  EXPECT_EQ(v[0].size(), 256u);
}

}  // namespace
}  // namespace infermesh::config
