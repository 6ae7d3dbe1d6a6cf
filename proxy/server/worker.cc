#include "proxy/server/worker.h"

#include <boost/asio/post.hpp>


namespace infermesh::proxy {

Worker::Worker(unsigned index, unsigned worker_count)
    : index_(index),
      worker_count_(worker_count),
      rng_(std::random_device{}()),
      work_(std::make_unique<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>(
          io_.get_executor())) {}

Worker::~Worker() { stopAndJoin(); }

void Worker::start() {
  thread_ = std::thread([this] {
    io_.run();
    // After stop: let the operations that closing cancelled complete, so
    // every coroutine unwinds on this thread instead of being destroyed
    // mid-flight with the io_context. Bounded, whatever is left.
    io_.restart();
    io_.run_for(std::chrono::seconds(1));
  });
}

void Worker::stopAndJoin() {
  if (!thread_.joinable()) return;
  post([this] {
    // Close everything this thread owns, then let run() return.
    for (auto* c : std::vector<DownstreamConnection*>(connections_.begin(), connections_.end())) c->close();
    upstreams_.clear();
    h2_upstreams_.clear();
    work_.reset();
    io_.stop();
  });
  thread_.join();
}

void Worker::post(std::function<void()> fn) { boost::asio::post(io_, std::move(fn)); }

std::uint32_t& Worker::roundRobinCounter(std::uint32_t model_index) {
  if (model_index >= round_robin_.size()) round_robin_.resize(model_index + 1, 0);
  return round_robin_[model_index];
}

std::string Worker::newRequestId() {
  static constexpr char kHex[] = "0123456789abcdef";
  std::uint64_t a = rng_(), b = rng_();
  std::string id(32, '0');
  for (int i = 0; i < 16; ++i) {
    id[i] = kHex[(a >> (i * 4)) & 0xf];
    id[16 + i] = kHex[(b >> (i * 4)) & 0xf];
  }
  return id;
}

void Worker::endpointHealthChanged(std::uint64_t endpoint_key, bool healthy) {
  endpoint_states_.get(endpoint_key).active = healthy ? upstream::ActiveHealth::Healthy : upstream::ActiveHealth::Unhealthy;
  if (!healthy || !snapshot_) return;
  for (const auto& m : snapshot_->models) {
    if (!m.activation.enabled()) continue;
    for (const auto& ep : m.endpoints)
      if (ep.key == endpoint_key) {
        if (auto it = gates_.find(m.stats_id); it != gates_.end()) it->second.activated();
        break;
      }
  }
}

void Worker::beginDrain() {
  draining_ = true;
  for (auto* c : std::vector<DownstreamConnection*>(connections_.begin(), connections_.end())) c->drain();
}

}  // namespace infermesh::proxy
