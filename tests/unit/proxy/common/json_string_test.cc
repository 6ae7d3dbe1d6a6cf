#include "proxy/common/json_string.h"

#include <gtest/gtest.h>

namespace infermesh::common {
namespace {

std::string json(std::string_view s) {
  std::string out;
  appendJsonString(out, s);
  return out;
}

TEST(JsonString, EscapesControlsAndQuotes) {
  EXPECT_EQ(json("a\"b\\c\n\x01\x7f"), R"("a\"b\\c\n\u0001\u007f")");
}

TEST(JsonString, KeepsValidUtf8) {
  EXPECT_EQ(json("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
}

TEST(JsonString, ReplacesInvalidUtf8) {
  EXPECT_EQ(json("/v1/\xff"), R"("/v1/\ufffd")");
  EXPECT_EQ(json("\xc3"), R"("\ufffd")");                 // truncated
  EXPECT_EQ(json("\xc0\xaf"), R"("\ufffd\ufffd")");       // overlong '/'
  EXPECT_EQ(json("\xed\xa0\x80"), R"("\ufffd\ufffd\ufffd")");  // surrogate
  EXPECT_EQ(json("\xf4\x90\x80\x80"), R"("\ufffd\ufffd\ufffd\ufffd")");  // above U+10FFFF
  EXPECT_EQ(json("\xe2\x82"), R"("\ufffd\ufffd")");
}

}  // namespace
}  // namespace infermesh::common
