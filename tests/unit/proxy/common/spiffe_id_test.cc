#include "proxy/common/spiffe_id.h"

#include <gtest/gtest.h>

namespace infermesh::common {
namespace {

TEST(SpiffeId, AcceptsWellFormedIds) {
  for (const char* id : {"spiffe://mesh.local", "spiffe://mesh.local/ns/apps/sa/chat", "spiffe://td-1_x/a.b/C-d_e",
                         "spiffe://example.org/..a/b.."})
    EXPECT_EQ(spiffeIdError(id), "") << id;
}

TEST(SpiffeId, RefusesMalformedIds) {
  for (std::string id : {"https://mesh.local/x", "SPIFFE://mesh.local/x", "spiffe://", "spiffe:///ns/x",
                         "spiffe://Mesh.local/x", "spiffe://mesh.local:8443/x", "spiffe://user@mesh.local/x",
                         "spiffe://mesh.local/", "spiffe://mesh.local/ns//x", "spiffe://mesh.local/ns/./x",
                         "spiffe://mesh.local/ns/apps/../admin/sa/x", "spiffe://mesh.local/ns/x?q",
                         "spiffe://mesh.local/ns/x#f", "spiffe://mesh.local/ns/a%2Fb",
                         "spiffe://mesh.local/ns/x\r\nx-evil: 1", "spiffe://mesh.local/x;By=spiffe://mesh.local/ns/admin",
                         "spiffe://mesh.local/a,URI=spiffe://mesh.local/ns/admin", "spiffe://mesh.local/\xc3\xa9"})
    EXPECT_NE(spiffeIdError(id), "") << id;
  EXPECT_NE(spiffeIdError("spiffe://" + std::string(256, 'a')), "");
  EXPECT_NE(spiffeIdError("spiffe://td/" + std::string(2048, 'a')), "");
}

TEST(SpiffeId, PrefixesMatchWholeSegments) {
  EXPECT_TRUE(spiffeIdMatches("spiffe://td/ns/apps/sa/x", "spiffe://td/ns/apps/"));
  EXPECT_FALSE(spiffeIdMatches("spiffe://td/ns/apps-admin/sa/x", "spiffe://td/ns/apps/"));
  EXPECT_FALSE(spiffeIdMatches("spiffe://td/ns/apps", "spiffe://td/ns/apps/"));
  EXPECT_TRUE(spiffeIdMatches("spiffe://td/ns/apps", "spiffe://td/ns/apps"));
  EXPECT_FALSE(spiffeIdMatches("spiffe://td/ns/apps/sa", "spiffe://td/ns/apps"));
  EXPECT_TRUE(spiffeIdAllowed("spiffe://td/b", {"spiffe://td/a", "spiffe://td/b"}));
  EXPECT_FALSE(spiffeIdAllowed("spiffe://td/b", {}));
}

TEST(SpiffeId, PatternsAreValidIdsWithAnOptionalSlash) {
  EXPECT_EQ(spiffePatternError("spiffe://td/ns/apps/"), "");
  EXPECT_EQ(spiffePatternError("spiffe://td/"), "");
  EXPECT_NE(spiffePatternError("spiffe://td/ns/../"), "");
  EXPECT_NE(spiffePatternError("spiffe://td/ns//"), "");
  EXPECT_NE(spiffePatternError("td/ns/"), "");
}

TEST(SpiffeId, XfccValuesAreQuotedWhenNeeded) {
  EXPECT_EQ(xfccValue("spiffe://td/ns/a"), "spiffe://td/ns/a");
  EXPECT_EQ(xfccValue("a;By=b"), "\"a;By=b\"");
  EXPECT_EQ(xfccValue("a,b"), "\"a,b\"");
  EXPECT_EQ(xfccValue("say \"hi\\\""), "\"say \\\"hi\\\\\\\"\"");
}

}  // namespace
}  // namespace infermesh::common
