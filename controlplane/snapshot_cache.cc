#include "controlplane/snapshot_cache.h"

#include <spdlog/spdlog.h>

namespace infermesh::controlplane {

std::shared_ptr<const xds::Snapshot> buildSnapshot(const config::Resources& resources) {
  xds::SnapshotBuilder b;
  for (const auto& m : resources.models) b.add(m.name, m.spec);
  for (const auto& l : resources.listeners) b.add(l.name, l.spec);
  for (const auto& r : resources.routes) b.add(r.name, r.spec);
  for (const auto& t : resources.tenants) b.add(t.name, t.spec);
  for (const auto& p : resources.policies) b.add(p.name, p.spec);
  return b.build();
}

void SnapshotCache::set(std::shared_ptr<const config::Resources> resources, std::uint64_t version) {
  std::lock_guard lock(mu_);
  resources_ = std::move(resources);
  version_ = version;
  by_labels_.clear();
}

std::shared_ptr<const xds::Snapshot> SnapshotCache::snapshotFor(const config::Labels& labels) {
  std::lock_guard lock(mu_);
  if (!resources_) return nullptr;
  std::string key;
  for (const auto& [k, v] : labels) key += k + "=" + v + ",";
  auto& snap = by_labels_[key];
  if (!snap) {
    snap = buildSnapshot(config::selectForNode(*resources_, labels));
    if (auto err = snap->consistencyError(); !err.empty())
      spdlog::warn("snapshot for labels {{{}}} is inconsistent: {}", key, err);
  }
  return snap;
}

std::uint64_t SnapshotCache::version() const {
  std::lock_guard lock(mu_);
  return version_;
}

}  // namespace infermesh::controlplane
