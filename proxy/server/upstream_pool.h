#pragma once

#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include "proxy/tls/transport.h"

#include <chrono>
#include <cstdint>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace infermesh::proxy {

struct UpstreamConnection {
  explicit UpstreamConnection(const boost::asio::any_io_executor& ex) : stream(boost::beast::tcp_stream(ex)) {}
  UpstreamStream stream;  // plain or TLS; lower() has the timeouts
  boost::beast::flat_buffer buffer;
  std::chrono::steady_clock::time_point expires_at;  // while idle in the pool
};

// How long a connection may idle in the pool after a response: the
// model's limit, shortened by the server's own `Keep-Alive: timeout=N`
// minus a margin (a second, or half of N when N is short), so the proxy
// stops reusing it before the server closes it. Zero: do not pool.
std::chrono::milliseconds keepAliveFor(std::chrono::milliseconds configured, std::string_view keep_alive_header);

// Idle keep-alive connections to upstream endpoints, per worker (never
// shared across threads). Keyed by EndpointConfig::key, which survives
// config reloads, so a reload keeps warm connections.
//
// Reusing a connection races with the server closing it: a request written
// just as the server gives up on the connection is lost with no way to know
// whether it was processed. Expiring connections before the server's
// keep-alive timeout keeps that race rare; the router decides what may be
// replayed when it happens anyway.
class UpstreamPool {
 public:
  static constexpr std::size_t kMaxIdlePerEndpoint = 128;

  UpstreamPool() = default;
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // A live idle connection, or nullptr. Connections the peer has closed
  // (seen with a non-blocking peek) or past their time are dropped.
  std::unique_ptr<UpstreamConnection> take(std::uint64_t key);
  // Keeps `conn` for at most `keep_for` (nothing when zero). Expired
  // connections are closed by a timer, not only when next asked for, so
  // the proxy (not the server) ends them and no descriptor idles forever.
  void put(std::uint64_t key, std::unique_ptr<UpstreamConnection> conn, std::chrono::milliseconds keep_for);
  void clear();

 private:
  void arm(const boost::asio::any_io_executor& ex, std::chrono::steady_clock::time_point at);
  void sweep();

  std::unordered_map<std::uint64_t, std::vector<std::unique_ptr<UpstreamConnection>>> idle_;
  std::unique_ptr<boost::asio::steady_timer> sweep_timer_;
  std::chrono::steady_clock::time_point sweep_at_ = std::chrono::steady_clock::time_point::max();
};

}  // namespace infermesh::proxy
