#pragma once

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "proxy/config/snapshot.h"
#include "proxy/server/upstream_h2.h"
#include "proxy/server/upstream_pool.h"
#include "proxy/stats/worker_stats.h"
#include "proxy/upstream/admission.h"
#include "proxy/upstream/load_balancer.h"

namespace infermesh::upstream {
class HealthChecker;
}

#include "proxy/server/connection.h"

namespace spdlog {
class logger;
}

namespace infermesh::proxy {

// One event-loop thread. Connections accepted here stay here; everything in
// a Worker is touched only from its own thread, except through post().
class Worker {
 public:
  Worker(unsigned index, unsigned worker_count);
  ~Worker();

  unsigned index() const { return index_; }
  boost::asio::io_context& io() { return io_; }
  void start();
  void stopAndJoin();
  void post(std::function<void()> fn);

  // Worker thread only.
  const std::shared_ptr<const config::Snapshot>& snapshot() const { return snapshot_; }
  void setSnapshot(std::shared_ptr<const config::Snapshot> s) { snapshot_ = std::move(s); }
  // Access loggers by listener index (null: off). Set with the snapshot.
  void setAccessLogs(std::vector<std::shared_ptr<spdlog::logger>> logs) { access_logs_ = std::move(logs); }
  spdlog::logger* accessLog(std::uint32_t listener) const {
    return listener < access_logs_.size() ? access_logs_[listener].get() : nullptr;
  }
  UpstreamPool& upstreams() { return upstreams_; }
  UpstreamH2Pool& h2Upstreams() { return h2_upstreams_; }

  // 16 KiB relay buffers, reused across streams (a stream holds one only
  // while it relays a response body).
  static constexpr std::size_t kRelayBufferSize = 16 * 1024;
  std::unique_ptr<char[]> takeRelayBuffer() {
    if (relay_buffers_.empty()) return std::unique_ptr<char[]>(new char[kRelayBufferSize]);
    auto b = std::move(relay_buffers_.back());
    relay_buffers_.pop_back();
    return b;
  }
  void returnRelayBuffer(std::unique_ptr<char[]> b) {
    if (relay_buffers_.size() < 256) relay_buffers_.push_back(std::move(b));
  }
  stats::WorkerStats& stats() { return stats_; }
  // Load-balancing state, per worker: round-robin position per model,
  // endpoint health and load, and a random source for two-choice picks.
  std::uint32_t& roundRobinCounter(std::uint32_t model_index);
  upstream::EndpointStates& endpointStates() { return endpoint_states_; }
  std::mt19937_64& rng() { return rng_; }
  std::string newRequestId();
  unsigned workerCount() const { return worker_count_; }

  // Circuit breakers and queues per model (by the model's stats id, which
  // is stable across reloads).
  upstream::ModelGate& gate(std::uint32_t model_stats_id) { return gates_[model_stats_id]; }
  // Requests and retries in flight per route (stats id), for retry budgets.
  struct RouteLoad {
    std::uint32_t requests = 0;
    std::uint32_t retries = 0;
  };
  RouteLoad& routeLoad(std::uint32_t route_stats_id) { return route_load_[route_stats_id]; }
  // Observed time to first byte per model (stats id), for "fastest".
  upstream::EndpointHealth& modelLatency(std::uint32_t model_stats_id) { return model_latency_[model_stats_id]; }
  // Shadow requests in flight (bounded).
  std::uint32_t& mirrorsInFlight() { return mirrors_in_flight_; }
  // Where this proxy runs (locality-aware picking).
  const upstream::SelfLocality& locality() const { return locality_; }
  void setLocality(upstream::SelfLocality l) { locality_ = std::move(l); }
  // The process's health checker (activation webhooks); may be null.
  upstream::HealthChecker* healthChecker() const { return health_checker_; }
  void setHealthChecker(upstream::HealthChecker* h) { health_checker_ = h; }
  // An active health check changed an endpoint's state (posted by the
  // health checker): models it serves that were cold release their queue.
  void endpointHealthChanged(std::uint64_t endpoint_key, bool healthy);
  // A polled load report (posted by the health checker), taken against
  // this worker's own requests in flight at the time it arrives.
  void endpointLoadReported(std::uint64_t endpoint_key, const upstream::LoadReport& report) {
    upstream::applyLoadReport(endpoint_states_.get(endpoint_key), report, upstream::Clock::now());
  }

  // Connection tracking for graceful drain.
  void track(DownstreamConnection* c) { connections_.insert(c); }
  void untrack(DownstreamConnection* c) { connections_.erase(c); }
  // Stop keep-alive on every connection and close the idle ones.
  void beginDrain();
  bool draining() const { return draining_; }
  // Streams in flight right now (readable from other threads).
  std::int64_t activeStreams() const { return active_streams_.load(std::memory_order_relaxed); }
  void streamStarted() { active_streams_.fetch_add(1, std::memory_order_relaxed); }
  void streamEnded() { active_streams_.fetch_sub(1, std::memory_order_relaxed); }
  std::size_t connectionCount() const { return connections_.size(); }

 private:
  // Declaration order is destruction order, reversed: io_ goes before the
  // state its pending handlers (connections) still touch, and upstreams_
  // (sockets on io_) goes before io_.
  unsigned index_;
  unsigned worker_count_;
  std::shared_ptr<const config::Snapshot> snapshot_;
  std::vector<std::shared_ptr<spdlog::logger>> access_logs_;
  stats::WorkerStats stats_;
  std::vector<std::uint32_t> round_robin_;
  upstream::EndpointStates endpoint_states_;
  std::mt19937_64 rng_;
  std::unordered_map<std::uint32_t, upstream::ModelGate> gates_;
  std::unordered_map<std::uint32_t, RouteLoad> route_load_;
  std::unordered_map<std::uint32_t, upstream::EndpointHealth> model_latency_;
  std::uint32_t mirrors_in_flight_ = 0;
  upstream::SelfLocality locality_;
  upstream::HealthChecker* health_checker_ = nullptr;
  std::unordered_set<DownstreamConnection*> connections_;
  std::vector<std::unique_ptr<char[]>> relay_buffers_;
  bool draining_ = false;
  std::atomic<std::int64_t> active_streams_{0};
  boost::asio::io_context io_{1};
  std::unique_ptr<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::thread thread_;
  UpstreamPool upstreams_;
  UpstreamH2Pool h2_upstreams_;
};

}  // namespace infermesh::proxy
