#pragma once

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <string>

#include "proxy/config/snapshot.h"

namespace infermesh::proxy {
class Worker;
struct UpstreamConnection;
}  // namespace infermesh::proxy

namespace infermesh::router {

struct ConnectResult {
  bool ok = false;
  std::string error;  // why not, for the client's error message and logs
  std::string alpn;   // the protocol TLS negotiated ("h2", "http/1.1", "")
};

// Opens `conn` to the endpoint within `timeout`: TCP, then, when the model
// has upstream TLS, the handshake (verifying the server, presenting the
// client certificate, resuming the endpoint's last session). Counted in the
// worker's stats.
boost::asio::awaitable<ConnectResult> connectUpstream(proxy::Worker& worker, const config::Snapshot& snapshot,
                                                      const config::ModelConfig& model,
                                                      const config::EndpointConfig& endpoint,
                                                      proxy::UpstreamConnection& conn,
                                                      std::chrono::steady_clock::duration timeout);

// Pool key for a model's connections to an endpoint: plain connections and
// TLS connections made with different settings never mix.
std::uint64_t poolKey(const config::Snapshot& snapshot, const config::ModelConfig& model,
                      const config::EndpointConfig& endpoint);

}  // namespace infermesh::router
