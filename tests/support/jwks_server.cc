#include "tests/support/jwks_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <stdexcept>

#include "tests/support/test_certs.h"

namespace infermesh::testing {
namespace {

// Waits in short slices so the server notices `stopping` promptly.
bool waitIo(int fd, short events, const std::atomic<bool>& stopping) {
  while (!stopping) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, 20);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
  return false;
}

// One SSL call to completion; <= 0 on close or error.
template <typename Op>
int sslIo(SSL* ssl, int fd, const std::atomic<bool>& stopping, Op op) {
  for (;;) {
    const int r = op();
    if (r > 0) return r;
    const int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
      if (!waitIo(fd, POLLIN, stopping)) return -1;
    } else if (e == SSL_ERROR_WANT_WRITE) {
      if (!waitIo(fd, POLLOUT, stopping)) return -1;
    } else {
      ERR_clear_error();
      return r;
    }
  }
}

bool writeAll(SSL* ssl, int fd, const std::atomic<bool>& stopping, const std::string& data) {
  std::size_t sent = 0;
  while (sent < data.size()) {
    const int n = sslIo(ssl, fd, stopping, [&] {
      return SSL_write(ssl, data.data() + sent, static_cast<int>(data.size() - sent));
    });
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

JwksServer::JwksServer(std::vector<std::string> dns, std::vector<std::string> ips) {
  makeCa(dir_.path(), "ca");
  CertSpec spec;
  spec.name = "server";
  spec.common_name = dns.empty() ? "jwks" : dns.front();
  spec.dns = std::move(dns);
  spec.ips = std::move(ips);
  makeCert(dir_.path(), "ca", spec);

  ctx_ = SSL_CTX_new(TLS_server_method());
  if (ctx_ == nullptr || SSL_CTX_use_certificate_chain_file(ctx_, (dir_.path() + "/server.crt").c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx_, (dir_.path() + "/server.key").c_str(), SSL_FILETYPE_PEM) != 1)
    throw std::runtime_error("JwksServer: cannot load its certificate");

  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 16) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error("JwksServer: cannot listen");
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { acceptLoop(); });
}

JwksServer::~JwksServer() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  SSL_CTX_free(ctx_);
}

std::string JwksServer::url(std::string_view path, std::string_view host) const {
  return "https://" + std::string(host) + ":" + std::to_string(port_) + std::string(path);
}

void JwksServer::setBody(std::string body) {
  std::lock_guard lock(mu_);
  body_ = std::move(body);
}

void JwksServer::acceptLoop() {
  while (waitIo(listen_fd_, POLLIN, stopping_)) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    serve(fd);
    ::close(fd);
  }
}

void JwksServer::serve(int fd) {
  SSL* ssl = SSL_new(ctx_);
  SSL_set_fd(ssl, fd);
  SSL_set_accept_state(ssl);
  std::string head;
  char buf[4096];
  bool ok = sslIo(ssl, fd, stopping_, [&] { return SSL_do_handshake(ssl); }) > 0;
  while (ok && head.find("\r\n\r\n") == std::string::npos && head.size() < 16384) {
    const int n = sslIo(ssl, fd, stopping_, [&] { return SSL_read(ssl, buf, sizeof buf); });
    if (n <= 0) ok = false;
    else head.append(buf, static_cast<std::size_t>(n));
  }
  if (ok && head.find("\r\n\r\n") != std::string::npos) {
    ++requests_;
    const Mode mode = mode_;
    if (mode == Mode::Serve) {
      std::string body;
      {
        std::lock_guard lock(mu_);
        body = body_;
      }
      std::string response = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n";
      if (chunked_) {
        response += "Transfer-Encoding: chunked\r\n\r\n";
        for (std::size_t i = 0; i < body.size(); i += 100) {
          const auto part = body.substr(i, 100);
          char size[32];
          std::snprintf(size, sizeof size, "%zx\r\n", part.size());
          response += size + part + "\r\n";
        }
        response += "0\r\n\r\n";
      } else {
        response += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
      }
      writeAll(ssl, fd, stopping_, response);
    } else if (mode == Mode::Fail500) {
      writeAll(ssl, fd, stopping_,
               "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    } else {
      // Until the client gives up (its read ends) or the test changes the mode.
      while (!stopping_ && mode_ == Mode::Hang) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 20) > 0) {
          const int n = SSL_read(ssl, buf, sizeof buf);
          if (n <= 0 && SSL_get_error(ssl, n) != SSL_ERROR_WANT_READ) break;
        }
      }
    }
    SSL_shutdown(ssl);
  }
  ERR_clear_error();
  SSL_free(ssl);
}

}  // namespace infermesh::testing
