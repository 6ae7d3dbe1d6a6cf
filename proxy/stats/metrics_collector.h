#pragma once

#include <prometheus/collectable.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <vector>

#include "proxy/stats/worker_stats.h"

namespace infermesh::stats {

// Process-level values owned by the main thread.
struct ProcessStats {
  std::atomic<std::uint64_t> config_version{0};
  std::atomic<std::uint64_t> config_reloads_ok{0};
  std::atomic<std::uint64_t> config_reloads_failed{0};
  // Control-plane mode: -1 when off, else 0/1.
  std::atomic<int> xds_connected{-1};
  std::atomic<bool> serving_from_cache{false};
  // Active health checks and scale from zero (the health checker thread).
  std::atomic<std::uint64_t> health_checks_passed{0};
  std::atomic<std::uint64_t> health_checks_failed{0};
  std::atomic<std::int64_t> endpoints_unhealthy{0};
  // Out-of-band load reports (Model.loadReport), polled on the same thread.
  std::atomic<std::uint64_t> load_reports_polled{0};
  std::atomic<std::uint64_t> load_report_failures{0};
  std::atomic<std::uint64_t> activations{0};
  std::atomic<std::uint64_t> activation_failures{0};
  std::atomic<std::uint64_t> tls_reloads_ok{0};
  std::atomic<std::uint64_t> tls_reloads_failed{0};
};

// Turns the per-worker counters into Prometheus families at scrape time.
// `gather` returns one WorkerStats copy per worker (taken on each worker's
// own thread), so the request path never touches shared state.
class MetricsCollector final : public prometheus::Collectable {
 public:
  MetricsCollector(std::function<std::vector<WorkerStats>()> gather, const ProcessStats& process)
      : gather_(std::move(gather)), process_(process) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::function<std::vector<WorkerStats>()> gather_;
  const ProcessStats& process_;
};

}  // namespace infermesh::stats
