#include "tests/support/http_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/beast/http.hpp>

namespace infermesh::testing {

namespace http = boost::beast::http;

HttpConnection::HttpConnection(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd_);
    fd_ = -1;
    return;
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

HttpConnection::~HttpConnection() {
  if (fd_ >= 0) ::close(fd_);
}

bool HttpConnection::sendRaw(const std::string& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

std::string HttpConnection::readSome(std::chrono::milliseconds timeout) {
  if (!buffered_.empty()) return std::exchange(buffered_, {});
  pollfd pfd{fd_, POLLIN, 0};
  if (::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) return {};
  char buf[65536];
  ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

bool HttpConnection::closedByPeer(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, 50) > 0) {
      char buf[4096];
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return true;
    }
  }
  return false;
}

HttpResponse HttpConnection::read(std::chrono::milliseconds timeout, bool head_request) {
  HttpResponse out;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  parser.skip(head_request);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string data = std::exchange(buffered_, {});
  boost::beast::error_code ec;
  for (;;) {
    while (!data.empty() && !parser.is_done()) {
      std::size_t used = parser.put(boost::asio::buffer(data), ec);
      if (ec == http::error::need_more) {
        ec = {};
        break;
      }
      if (ec) {
        out.error = ec.message();
        return out;
      }
      data.erase(0, used);
      if (used == 0) break;
    }
    if (parser.is_done()) break;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      out.error = "timeout";
      break;
    }
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) {
      out.error = "timeout";
      break;
    }
    char buf[65536];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      if (!parser.got_some()) {  // closed before any response byte
        out.error = "connection closed without a response";
        break;
      }
      parser.put_eof(ec);  // ends a close-delimited body, or says it was cut
      if (ec) out.error = "connection closed: " + ec.message();
      break;
    }
    data.append(buf, static_cast<std::size_t>(n));
  }
  buffered_ = std::move(data);
  if (parser.is_header_done()) {
    const auto& res = parser.get();
    out.status = res.result_int();
    for (const auto& f : res) {
      std::string name(f.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      // A repeated header reads as one, comma-joined, so a test sees it twice.
      auto [it, fresh] = out.headers.try_emplace(name, f.value());
      if (!fresh) it->second.append(", ").append(f.value());
    }
    out.body = res.body();
  }
  out.complete = parser.is_done();
  return out;
}

HttpResponse httpRequest(int port, const std::string& method, const std::string& target, const std::string& body,
                         const std::map<std::string, std::string>& headers, std::chrono::milliseconds timeout) {
  HttpConnection c(port);
  if (!c.connected()) return HttpResponse{0, {}, {}, false, "connect failed"};
  std::string req = method + " " + target + " HTTP/1.1\r\nhost: 127.0.0.1\r\n";
  for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  if (!body.empty() || method == "POST") {
    req += "content-type: application/json\r\ncontent-length: " + std::to_string(body.size()) + "\r\n";
  }
  req += "\r\n" + body;
  c.sendRaw(req);
  return c.read(timeout, method == "HEAD");
}

std::string chatBody(const std::string& model, bool stream) {
  return R"({"model":")" + model + R"(","messages":[{"role":"user","content":"Say hello"}],"stream":)" +
         (stream ? "true" : "false") + "}";
}

std::string httpGetBody(int port, const std::string& target) { return httpRequest(port, "GET", target).body; }

}  // namespace infermesh::testing
