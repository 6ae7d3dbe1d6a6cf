#include "proxy/common/path_normalizer.h"

#include <gtest/gtest.h>

namespace infermesh::common {
namespace {

std::string norm(std::string_view target, PathNormalization o = {}) {
  auto n = normalizeTarget(target, o);
  if (n.unchanged) return std::string(target);
  return n.error.empty() ? n.target : "ERROR: " + n.error;
}

TEST(PathNormalizer, LeavesCleanTargetsAlone) {
  EXPECT_TRUE(normalizeTarget("/v1/chat/completions?x=%2F&y=/./", {}).unchanged);
  EXPECT_FALSE(normalizeTarget("/v1/./chat", {}).unchanged);
  EXPECT_EQ(norm("/v1/chat/completions"), "/v1/chat/completions");
  EXPECT_EQ(norm("/v1/models?limit=10&x=%2F"), "/v1/models?limit=10&x=%2F");
  EXPECT_EQ(norm("/"), "/");
  EXPECT_EQ(norm("/v1/"), "/v1/");
  EXPECT_EQ(norm("*"), "*");
}

TEST(PathNormalizer, RemovesDotSegments) {
  EXPECT_EQ(norm("/v1/chat/completions/../../../internal/reset"), "/internal/reset");
  EXPECT_EQ(norm("/v1/./chat/./completions"), "/v1/chat/completions");
  EXPECT_EQ(norm("/../../etc/passwd"), "/etc/passwd");
  EXPECT_EQ(norm("/a/b/.."), "/a/");
  EXPECT_EQ(norm("/a/b/."), "/a/b/");
  EXPECT_EQ(norm("/.."), "/");
  EXPECT_EQ(norm("/a/..b/c"), "/a/..b/c");  // not a dot segment
  EXPECT_EQ(norm("/a/../b?q=/../x"), "/b?q=/../x");  // the query is not a path
}

TEST(PathNormalizer, DecodesUnreservedBeforeRemovingDots) {
  EXPECT_EQ(norm("/v1/%2e%2e/internal/reset"), "/internal/reset");
  EXPECT_EQ(norm("/v1/%2E%2e/%2e/x"), "/x");
  EXPECT_EQ(norm("/v1/ch%61t"), "/v1/chat");
  EXPECT_EQ(norm("/v1/%7euser"), "/v1/~user");
  // Reserved characters stay encoded, with upper-case hex.
  EXPECT_EQ(norm("/v1/a%3fb%3Ac"), "/v1/a%3Fb%3Ac");
  EXPECT_EQ(norm("/v1/a%20b"), "/v1/a%20b");
}

TEST(PathNormalizer, MergesSlashesUnlessTurnedOff) {
  EXPECT_EQ(norm("//v1//chat///completions"), "/v1/chat/completions");
  EXPECT_EQ(norm("/v1//"), "/v1/");
  PathNormalization keep;
  keep.merge_slashes = false;
  EXPECT_EQ(norm("/v1//chat", keep), "/v1//chat");
  EXPECT_EQ(norm("/v1//../chat", keep), "/v1/chat");
}

TEST(PathNormalizer, EscapedSlashesRejectedByDefault) {
  EXPECT_NE(norm("/v1%2F..%2Finternal").find("ERROR"), std::string::npos);
  EXPECT_NE(norm("/v1/a%5cb").find("ERROR"), std::string::npos);
  PathNormalization keep;
  keep.escaped_slashes = EscapedSlashes::Keep;
  EXPECT_EQ(norm("/v1%2f..%2Finternal", keep), "/v1%2F..%2Finternal");
  PathNormalization decode;
  decode.escaped_slashes = EscapedSlashes::Decode;
  EXPECT_EQ(norm("/v1/chat%2F..%2F..%2Finternal", decode), "/internal");
  EXPECT_EQ(norm("/v1%5Cx", decode), "/v1/x");
}

TEST(PathNormalizer, RefusesRawBytesAndMalformedEscapes) {
  for (std::string bad : {"/v1/\\..\\internal", "/v1/a b", "/v1/#frag", "/v1/\x7f", "/v1/%", "/v1/%4", "/v1/%zz",
                          "/v1/?q=a\tb", "v1/chat", "", "/v1/\xff"})
    EXPECT_NE(norm(bad).find("ERROR"), std::string::npos) << bad;
  EXPECT_NE(norm(std::string("/v1/a\0b", 7)).find("ERROR"), std::string::npos);
}

TEST(PathNormalizer, AbsoluteFormBecomesOriginForm) {
  auto n = normalizeTarget("http://model.internal:8080/v1/../v1/chat/completions?x=1", {});
  EXPECT_EQ(n.error, "");
  EXPECT_EQ(n.target, "/v1/chat/completions?x=1");
  EXPECT_EQ(n.authority, "model.internal:8080");
  n = normalizeTarget("HTTPS://host", {});
  EXPECT_EQ(n.target, "/");
  EXPECT_EQ(n.authority, "host");
  n = normalizeTarget("http://host?x", {});
  EXPECT_EQ(n.target, "/?x");
  EXPECT_NE(normalizeTarget("http:///v1", {}).error, "");
  EXPECT_NE(normalizeTarget("http://user@host/v1", {}).error, "");
}

}  // namespace
}  // namespace infermesh::common
