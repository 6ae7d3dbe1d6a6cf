#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "proxy/config/node_selector.h"
#include "proxy/config/resources.h"
#include "xds/snapshot.h"

namespace infermesh::controlplane {

// The config in force and its per-node snapshots. Nodes with the same labels
// share one snapshot (so its serialised resources are shared too).
class SnapshotCache {
 public:
  void set(std::shared_ptr<const config::Resources> resources, std::uint64_t version);
  // Null until a valid config has been loaded.
  std::shared_ptr<const xds::Snapshot> snapshotFor(const config::Labels& labels);
  std::uint64_t version() const;

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const config::Resources> resources_;
  std::uint64_t version_ = 0;
  std::map<std::string, std::shared_ptr<const xds::Snapshot>> by_labels_;
};

// Builds a node's snapshot from validated resources.
std::shared_ptr<const xds::Snapshot> buildSnapshot(const config::Resources& resources);

}  // namespace infermesh::controlplane
