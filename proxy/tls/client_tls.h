#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "proxy/config/snapshot.h"

struct ssl_ctx_st;
struct ssl_st;
struct ssl_session_st;

namespace infermesh::tls {

// TLS toward one model's endpoints: the trust bundle, the name or SPIFFE
// IDs servers must prove, an optional client certificate, ALPN, and the
// last session per endpoint so new connections resume instead of doing a
// full handshake. Shared by all workers (the session map is locked; it is
// touched once per new connection, never per request).
class ClientContext {
 public:
  static std::shared_ptr<const ClientContext> build(const config::UpstreamTlsConfig& config,
                                                    std::vector<std::string> alpn, std::string& error);
  ~ClientContext();
  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;

  // A new connection's SSL object (client mode) for an endpoint: SNI and
  // name or SPIFFE verification set, the endpoint's last session attached.
  ssl_st* newSsl(const config::EndpointConfig& endpoint) const;

  struct Callbacks;

 private:
  ClientContext() = default;
  ssl_ctx_st* ctx_ = nullptr;
  std::string server_name_;
  std::vector<std::string> spiffe_ids_;
  std::vector<unsigned char> alpn_wire_;
  mutable std::mutex mu_;
  mutable std::unordered_map<std::uint64_t, ssl_session_st*> sessions_;  // by endpoint key
};

// Builds the client contexts of a snapshot's models, reusing those whose
// settings did not change (so their session caches survive reloads).
class UpstreamTlsRegistry {
 public:
  // Attaches the contexts to `snapshot` (Snapshot::upstream_tls). False,
  // with the model and cause in `error`, when a file cannot be loaded.
  bool apply(const config::Snapshot& snapshot, std::string& error);

 private:
  std::map<std::string, std::shared_ptr<const ClientContext>> by_settings_;
};

}  // namespace infermesh::tls
