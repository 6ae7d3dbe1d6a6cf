#include "controlplane/snapshot_cache.h"

#include <gtest/gtest.h>

#include "tests/unit/xds/xds_test_util.h"

namespace infermesh::controlplane {
namespace {

using xds::testing::makeSnapshot;

TEST(ChangedResources, CountsAddedEditedAndRemovedOfEveryType) {
  const auto before = makeSnapshot({"m1", "m2"}, {{"r1", "m1"}});
  EXPECT_EQ(changedResources(nullptr, *before), 3u);
  EXPECT_EQ(changedResources(before.get(), *before), 0u);
  // m2 removed, m3 added, r1 edited (new model), r2 added.
  const auto after = makeSnapshot({"m1", "m3"}, {{"r1", "m3"}, {"r2", "m1"}});
  EXPECT_EQ(changedResources(before.get(), *after), 4u);
  // An endpoint change is an edit of every model.
  EXPECT_EQ(changedResources(before.get(), *makeSnapshot({"m1", "m2"}, {{"r1", "m1"}}, "127.0.0.1:9001")), 2u);
}

config::Resources models(const std::vector<std::string>& names, const std::string& endpoint = "127.0.0.1:9000") {
  config::Resources r;
  for (const auto& n : names) {
    config::Resource<config::v1::Model> m;
    m.name = n;
    m.spec.add_endpoints()->set_address(endpoint);
    r.models.push_back(std::move(m));
  }
  return r;
}

TEST(SnapshotCache, EachLoadIsNumberedAndCountsWhatItChanged) {
  SnapshotCache cache;
  EXPECT_EQ(cache.configFor({}).snapshot, nullptr);
  EXPECT_EQ(cache.lastLoad().version, 0u);

  cache.set(std::make_shared<const config::Resources>(models({"a", "b"})), 1, "deploy/local");
  const auto first = cache.lastLoad();
  EXPECT_EQ(first.version, 1u);
  EXPECT_EQ(first.source, "deploy/local");
  EXPECT_EQ(first.changed_resources, 2u);
  const NodeConfig c1 = cache.configFor({{"role", "sidecar"}});
  ASSERT_NE(c1.snapshot, nullptr);
  EXPECT_EQ(c1.version, 1u);

  cache.set(std::make_shared<const config::Resources>(models({"a", "c"})), 2, "deploy/local");
  EXPECT_EQ(cache.lastLoad().changed_resources, 2u);  // b removed, c added
  EXPECT_GE(cache.lastLoad().loaded_at, first.loaded_at);
  const NodeConfig c2 = cache.configFor({{"role", "sidecar"}});
  EXPECT_EQ(c2.version, 2u);
  EXPECT_NE(c2.snapshot, c1.snapshot);
}

}  // namespace
}  // namespace infermesh::controlplane
