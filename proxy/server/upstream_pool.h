#pragma once

#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include "proxy/server/transport.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

namespace infermesh::proxy {

struct UpstreamConnection {
  explicit UpstreamConnection(const boost::asio::any_io_executor& ex) : stream(boost::beast::tcp_stream(ex)) {}
  UpstreamStream stream;  // plain or TLS; lower() has the timeouts
  boost::beast::flat_buffer buffer;
  std::chrono::steady_clock::time_point idle_since;
};

// Idle keep-alive connections to upstream endpoints, per worker (never
// shared across threads). Keyed by EndpointConfig::key, which survives
// config reloads, so a reload keeps warm connections.
class UpstreamPool {
 public:
  static constexpr std::size_t kMaxIdlePerEndpoint = 128;
  static constexpr std::chrono::seconds kMaxIdleTime{30};

  // A live idle connection, or nullptr. Connections the peer has closed
  // (seen with a non-blocking peek) or that idled too long are dropped.
  std::unique_ptr<UpstreamConnection> take(std::uint64_t key);
  void put(std::uint64_t key, std::unique_ptr<UpstreamConnection> conn);
  void clear() { idle_.clear(); }

 private:
  std::unordered_map<std::uint64_t, std::vector<std::unique_ptr<UpstreamConnection>>> idle_;
};

}  // namespace infermesh::proxy
