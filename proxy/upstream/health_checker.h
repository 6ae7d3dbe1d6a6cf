#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "proxy/config/snapshot.h"
#include "proxy/upstream/load_balancer.h"

namespace infermesh::stats {
struct ProcessStats;
}

namespace infermesh::upstream {

// Active health checks, out-of-band load reports and scale-from-zero
// activation, on a thread of its own: one probe loop per endpoint that some
// model checks and one poll loop per endpoint whose model has a loadReport,
// whatever the worker count. State changes are handed to `publish` and load
// reports to `publish_load`, which forward them to every worker. Endpoints are keyed by EndpointConfig::key, so a reload
// keeps their state and their loops.
class HealthChecker {
 public:
  using Publish = std::function<void(std::uint64_t endpoint_key, bool healthy)>;
  using PublishLoad = std::function<void(std::uint64_t endpoint_key, const LoadReport& report)>;
  HealthChecker(Publish publish, stats::ProcessStats& stats, PublishLoad publish_load = {});
  ~HealthChecker();

  void start();
  void stop();
  // Follows a new config: starts, retunes and stops probe loops. Any thread.
  void update(std::shared_ptr<const config::Snapshot> snapshot);
  // A model has no healthy endpoint and a request is waiting: call its
  // activation webhook, once per cold start (until one of its endpoints
  // turns healthy or the queue timeout passes). Any thread.
  void activate(std::shared_ptr<const config::Snapshot> snapshot, const config::ModelConfig& model);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace infermesh::upstream
