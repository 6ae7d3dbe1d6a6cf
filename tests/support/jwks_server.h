#pragma once

// An HTTPS server on 127.0.0.1 (port 0) serving a JWKS that a test can
// replace at any time, or failing on demand, for JWKS source tests. One
// connection at a time on its own thread; every response closes the
// connection (the source asks for Connection: close).

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/support/process.h"

typedef struct ssl_ctx_st SSL_CTX;

namespace infermesh::testing {

class JwksServer {
 public:
  enum class Mode {
    Serve,    // 200 with the body
    Fail500,  // 500, empty body
    Hang,     // reads the request, then answers nothing until the client goes or the mode changes
  };

  // A fresh CA and a server certificate with these names.
  explicit JwksServer(std::vector<std::string> dns = {"localhost"}, std::vector<std::string> ips = {"127.0.0.1"});
  ~JwksServer();
  JwksServer(const JwksServer&) = delete;
  JwksServer& operator=(const JwksServer&) = delete;

  int port() const { return port_; }
  // https://127.0.0.1:<port><path>; `host` "localhost" for a name check.
  std::string url(std::string_view path = "/jwks.json", std::string_view host = "127.0.0.1") const;
  // The CA that signed the server's certificate (PEM file).
  std::string caFile() const { return dir_.path() + "/ca.crt"; }
  const TempDir& dir() const { return dir_; }

  void setBody(std::string body);
  void setMode(Mode mode) { mode_ = mode; }
  // Chunked transfer coding instead of Content-Length.
  void setChunked(bool chunked) { chunked_ = chunked; }
  // Requests whose head arrived whole, whatever the answer.
  std::size_t requests() const { return requests_; }

 private:
  void acceptLoop();
  void serve(int fd);

  TempDir dir_;
  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<Mode> mode_{Mode::Serve};
  std::atomic<bool> chunked_{false};
  std::atomic<std::size_t> requests_{0};
  std::mutex mu_;
  std::string body_;
  std::thread thread_;
};

}  // namespace infermesh::testing
