#include "xds/snapshot.h"

#include <gtest/gtest.h>

#include "tests/unit/xds/xds_test_util.h"
#include "infermesh/config/v1/config.pb.h"
#include "xds/resource_types.h"

namespace infermesh::xds {
namespace {

using testing::makeSnapshot;
const std::string kModels(kModelType), kRoutes(kRouteType), kListeners(kListenerType);

TEST(Snapshot, VersionsFollowContentPerType) {
  auto a = makeSnapshot({"m1", "m2"}, {{"r1", "m1"}});
  auto b = makeSnapshot({"m1", "m2"}, {{"r1", "m2"}});
  auto c = makeSnapshot({"m1", "m2"}, {{"r1", "m1"}}, "127.0.0.1:9001");
  EXPECT_EQ(a->version(kModels), b->version(kModels));  // models unchanged: no push
  EXPECT_NE(a->version(kRoutes), b->version(kRoutes));
  EXPECT_NE(a->version(kModels), c->version(kModels));
  EXPECT_EQ(a->get(kModels)->by_name.at("m1").version(), b->get(kModels)->by_name.at("m1").version());
  // Every type exists, even when empty.
  ASSERT_NE(a->get(kListeners), nullptr);
  EXPECT_TRUE(a->get(kListeners)->by_name.empty());
}

TEST(Snapshot, SourceTravelsWithTheResourceAndIsPartOfItsVersion) {
  config::v1::Model m;
  m.add_endpoints()->set_address("127.0.0.1:9000");
  auto at = [&](int line) {
    SnapshotBuilder b;
    b.add("m1", m, "/etc/infermesh/models.yaml", line);
    return b.build();
  };
  const auto a = at(3), same = at(3), moved = at(9);
  const auto& r = a->get(kModels)->by_name.at("m1");
  EXPECT_EQ(r.source_file(), "/etc/infermesh/models.yaml");
  EXPECT_EQ(r.source_line(), 3);
  EXPECT_EQ(r.version(), same->get(kModels)->by_name.at("m1").version());
  EXPECT_NE(r.version(), moved->get(kModels)->by_name.at("m1").version());
}

TEST(Snapshot, ConsistencyCheckFindsDanglingReferences) {
  EXPECT_EQ(makeSnapshot({"m1"}, {{"r1", "m1"}})->consistencyError(), "");
  EXPECT_NE(makeSnapshot({"m1"}, {{"r1", "gone"}})->consistencyError().find("Route/r1 refers to missing model gone"),
            std::string::npos);
}

TEST(Snapshot, ResourcesAreSerialisedOnce) {
  auto a = makeSnapshot({"m1"}, {});
  discovery::v1::DiscoveryResponse parsed;
  ASSERT_TRUE(parsed.ParseFromString(*a->get(kModels)->wire_resources));
  ASSERT_EQ(parsed.resources_size(), 1);
  EXPECT_EQ(parsed.resources(0).name(), "m1");
}

}  // namespace
}  // namespace infermesh::xds
