#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "proxy/config/snapshot.h"

struct ssl_ctx_st;
struct ssl_st;

namespace infermesh::tls {

// Why a TLS handshake failed (or that it did not), for counters.
enum class HandshakeResult : std::uint8_t {
  Ok,
  NoCertificate,      // mTLS and the client sent none
  Expired,            // client certificate out of its validity period
  UnknownCa,          // does not chain to the trust bundle
  BadCertificate,     // any other verification failure
  SpiffeIdNotAllowed, // valid, but its SPIFFE ID is not allowed here
  InvalidSpiffeId,    // its URI SANs are not exactly one valid SPIFFE ID
  Error,              // protocol error, timeout, client went away
  Count
};
inline constexpr const char* kHandshakeResultNames[] = {
    "ok", "no_certificate", "expired", "unknown_ca", "bad_certificate", "spiffe_id_not_allowed", "invalid_spiffe_id", "error"};

// One listener's TLS contexts as loaded at one moment: the default and the
// SNI alternatives, all with the same protocol, ALPN and client-verification
// settings. Immutable once built; connections keep a reference while they
// handshake, so a rotation never disturbs them.
class ServerContexts {
 public:
  // `alpn`: protocols to offer, in preference order ("h2", "http/1.1").
  static std::shared_ptr<const ServerContexts> build(const config::ListenerTlsConfig& config,
                                                     std::vector<std::string> alpn, std::string& error);
  ~ServerContexts();
  ServerContexts(const ServerContexts&) = delete;
  ServerContexts& operator=(const ServerContexts&) = delete;

  ssl_ctx_st* defaultContext() const { return contexts_.front().ctx; }

 private:
  ServerContexts() = default;
  struct Entry {
    ssl_ctx_st* ctx = nullptr;
    std::vector<std::string> names;
  };
  std::vector<Entry> contexts_;
  std::vector<std::string> allowed_spiffe_ids_;
  std::vector<unsigned char> alpn_wire_;
  friend struct Callbacks;
};

// After a successful handshake: the ALPN protocol chosen ("" when none)
// and the client's SPIFFE ID ("" without a client certificate or URI SAN).
std::string negotiatedProtocol(ssl_st* ssl);
std::string peerSpiffeId(ssl_st* ssl);
// Why a handshake failed, from its verification result and the OpenSSL
// error (the value of Asio's ssl error code; 0 when none).
HandshakeResult classifyFailure(ssl_st* ssl, unsigned long error);

// The TLS contexts of every listener, shared by the workers. The main
// thread applies configs and polls the files (rotation); workers read the
// current contexts per connection.
class ListenerTls {
 public:
  explicit ListenerTls(std::size_t listeners);
  // Builds contexts for a new snapshot (only where the TLS settings
  // changed). Returns false, with the listener and cause in `error`, when
  // a certificate cannot be loaded; nothing changes then.
  bool apply(const config::Snapshot& snapshot, std::string& error);
  // Reloads listeners whose files changed on disk. Returns how many were
  // reloaded; failures are logged and counted, the old contexts stay.
  int poll();
  std::shared_ptr<const ServerContexts> contexts(std::uint32_t listener) const;

  std::atomic<std::uint64_t> reloads_ok{0};
  std::atomic<std::uint64_t> reloads_failed{0};

 private:
  struct FileStamp {
    std::string path;
    std::int64_t mtime_ns = 0;
    std::int64_t size = 0;
    std::uint64_t inode = 0;
    bool operator==(const FileStamp&) const = default;
  };
  struct Slot {
    std::atomic<std::shared_ptr<const ServerContexts>> current;
    config::ListenerTlsConfig config;  // main thread only
    std::vector<std::string> alpn;
    std::vector<FileStamp> stamps;
    std::string name;
  };
  static std::vector<FileStamp> stamp(const config::ListenerTlsConfig& c);
  std::vector<std::unique_ptr<Slot>> slots_;
};

}  // namespace infermesh::tls
