#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "proxy/config/node_selector.h"
#include "proxy/config/resources.h"
#include "xds/snapshot.h"

namespace infermesh::controlplane {

// The accepted load of the YAML directory that produced the config in
// force. Its version is the control plane's own (one per accepted load since
// the process started), the number status shows for every proxy in sync.
struct ConfigLoad {
  std::uint64_t version = 0;  // 0: no valid config loaded yet
  std::chrono::system_clock::time_point loaded_at{};
  std::string source;                 // the config directory
  std::size_t changed_resources = 0;  // added, edited or removed by this load (all of them at the first)
};

// What a node is served: its snapshot and the config version it came from.
struct NodeConfig {
  std::shared_ptr<const xds::Snapshot> snapshot;  // null until a valid config has been loaded
  std::uint64_t version = 0;
};

// The config in force and its per-node snapshots. Nodes with the same labels
// share one snapshot (so its serialised resources are shared too).
class SnapshotCache {
 public:
  void set(std::shared_ptr<const config::Resources> resources, std::uint64_t version, std::string source);
  // The snapshot and its version are read together, so a stream never pairs
  // one load's resources with another load's number.
  NodeConfig configFor(const config::Labels& labels);
  std::uint64_t version() const;
  ConfigLoad lastLoad() const;

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const config::Resources> resources_;
  std::shared_ptr<const xds::Snapshot> everything_;  // unfiltered, to count what the next load changes
  ConfigLoad load_;
  std::map<std::string, std::shared_ptr<const xds::Snapshot>> by_labels_;
};

// Builds a node's snapshot from validated resources.
std::shared_ptr<const xds::Snapshot> buildSnapshot(const config::Resources& resources);

// Resources (of every type, by name and content version) that `after` adds,
// edits or removes compared with `before` (null: everything is new).
std::size_t changedResources(const xds::Snapshot* before, const xds::Snapshot& after);

}  // namespace infermesh::controlplane
