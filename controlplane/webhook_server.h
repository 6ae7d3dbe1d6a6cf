#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace boost::asio {
class io_context;
}

namespace infermesh::controlplane {

struct WebhookResponse {
  unsigned status = 200;
  std::string body;  // JSON
};

// POST path, body -> answer. Runs on the io_context's thread.
using WebhookHandler = std::function<WebhookResponse(std::string_view path, std::string_view body)>;

// The HTTPS server the Kubernetes API server calls admission webhooks on.
// TLS 1.2+ with the serving certificate and key from files, reloaded when
// they change (a rotated Secret); bounded body, a deadline per request,
// keep-alive.
class WebhookServer {
 public:
  // Binds `address` ("ip:port", port 0 picks one) and loads the
  // certificate; throws with the cause on failure.
  WebhookServer(boost::asio::io_context& io, const std::string& address, std::string cert_file, std::string key_file,
                WebhookHandler handler);
  ~WebhookServer();
  std::string boundAddress() const;  // "ip:port"
  void start();
  void close();

  // Bodies above this are refused with 413 (a pod's review is a few KiB;
  // the API server's own limit on an object is 1.5 MiB).
  static constexpr std::size_t kMaxBody = 3 * 1024 * 1024;

  // For metrics (read from any thread).
  std::uint64_t handshakeFailures() const;
  std::uint64_t certReloads() const;
  std::uint64_t certReloadFailures() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace infermesh::controlplane
