#include "controlplane/snapshot_cache.h"

#include <spdlog/spdlog.h>

#include "xds/resource_types.h"

namespace infermesh::controlplane {

std::shared_ptr<const xds::Snapshot> buildSnapshot(const config::Resources& resources) {
  xds::SnapshotBuilder b;
  for (const auto& m : resources.models) b.add(m.name, m.spec, m.file, m.line);
  for (const auto& l : resources.listeners) b.add(l.name, l.spec, l.file, l.line);
  for (const auto& r : resources.routes) b.add(r.name, r.spec, r.file, r.line);
  for (const auto& t : resources.tenants) b.add(t.name, t.spec, t.file, t.line);
  for (const auto& p : resources.policies) b.add(p.name, p.spec, p.file, p.line);
  return b.build();
}

std::size_t changedResources(const xds::Snapshot* before, const xds::Snapshot& after) {
  std::size_t changed = 0;
  for (const auto& type : xds::pushOrder()) {
    const xds::TypedResources* old = before ? before->get(type) : nullptr;
    const xds::TypedResources* now = after.get(type);
    if (now != nullptr)
      for (const auto& [name, r] : now->by_name) {
        if (old == nullptr) {
          ++changed;
          continue;
        }
        const auto it = old->by_name.find(name);
        changed += it == old->by_name.end() || it->second.version() != r.version();
      }
    if (old != nullptr)
      for (const auto& [name, r] : old->by_name) changed += now == nullptr || now->by_name.count(name) == 0;
  }
  return changed;
}

void SnapshotCache::set(std::shared_ptr<const config::Resources> resources, std::uint64_t version,
                        std::string source) {
  // Built outside the lock: streams keep reading the old config meanwhile.
  auto everything = buildSnapshot(*resources);
  std::lock_guard lock(mu_);
  load_ = ConfigLoad{version, std::chrono::system_clock::now(), std::move(source),
                     changedResources(everything_.get(), *everything)};
  everything_ = std::move(everything);
  resources_ = std::move(resources);
  by_labels_.clear();
}

NodeConfig SnapshotCache::configFor(const config::Labels& labels) {
  std::lock_guard lock(mu_);
  if (!resources_) return {};
  std::string key;
  for (const auto& [k, v] : labels) key += k + "=" + v + ",";
  auto& snap = by_labels_[key];
  if (!snap) {
    snap = buildSnapshot(config::selectForNode(*resources_, labels));
    if (auto err = snap->consistencyError(); !err.empty())
      spdlog::warn("snapshot for labels {{{}}} is inconsistent: {}", key, err);
  }
  return {snap, load_.version};
}

std::uint64_t SnapshotCache::version() const {
  std::lock_guard lock(mu_);
  return load_.version;
}

ConfigLoad SnapshotCache::lastLoad() const {
  std::lock_guard lock(mu_);
  return load_;
}

}  // namespace infermesh::controlplane
