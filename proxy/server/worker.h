#pragma once

#include <boost/asio/io_context.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <unordered_set>
#include <vector>

#include "proxy/config/snapshot.h"
#include "proxy/server/upstream_pool.h"
#include "proxy/stats/worker_stats.h"
#include "proxy/upstream/load_balancer.h"

namespace infermesh::proxy {

class Http1Connection;

}  // namespace infermesh::proxy

namespace spdlog {
class logger;
}

namespace infermesh::proxy {

// One event-loop thread. Connections accepted here stay here; everything in
// a Worker is touched only from its own thread, except through post().
class Worker {
 public:
  explicit Worker(unsigned index);
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

  // Connection tracking for graceful drain.
  void track(Http1Connection* c) { connections_.insert(c); }
  void untrack(Http1Connection* c) { connections_.erase(c); }
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
  std::shared_ptr<const config::Snapshot> snapshot_;
  std::vector<std::shared_ptr<spdlog::logger>> access_logs_;
  stats::WorkerStats stats_;
  std::vector<std::uint32_t> round_robin_;
  upstream::EndpointStates endpoint_states_;
  std::mt19937_64 rng_;
  std::unordered_set<Http1Connection*> connections_;
  std::vector<std::unique_ptr<char[]>> relay_buffers_;
  bool draining_ = false;
  std::atomic<std::int64_t> active_streams_{0};
  boost::asio::io_context io_{1};
  std::unique_ptr<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work_;
  std::thread thread_;
  UpstreamPool upstreams_;
};

}  // namespace infermesh::proxy
