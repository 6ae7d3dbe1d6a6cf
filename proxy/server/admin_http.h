#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace boost::asio {
class io_context;
}

namespace infermesh::proxy {

struct AdminResponse {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// GET path (query string removed) -> response. Runs on the io_context's thread.
using AdminHandler = std::function<AdminResponse(std::string_view path)>;

// A small HTTP/1.1 server for operator endpoints (/ready, /metrics ...),
// shared by the proxy and the control plane. Bounded request size, a
// deadline per request, keep-alive.
class AdminHttpServer {
 public:
  // Binds `address` ("ip:port", port 0 picks one); throws on failure.
  AdminHttpServer(boost::asio::io_context& io, const std::string& address, AdminHandler handler);
  ~AdminHttpServer();
  std::string boundAddress() const;  // "ip:port"
  void start();
  void close();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace infermesh::proxy
