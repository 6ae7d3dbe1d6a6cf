#include "controlplane/webhook_server.h"

#include <openssl/ssl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <stdexcept>

#include "proxy/tls/server_tls.h"

namespace infermesh::controlplane {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

namespace {

// What a file looked like when it was loaded; a change means a reload.
struct Stamp {
  std::int64_t mtime_ns = 0;
  std::int64_t size = 0;
  std::uint64_t inode = 0;
  bool operator==(const Stamp&) const = default;
};

Stamp stampOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return Stamp{st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec, st.st_size, st.st_ino};
}

}  // namespace

struct WebhookServer::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& io, std::string cert, std::string key, WebhookHandler h)
      : io(io), acceptor(io), poll_timer(io), cert_file(std::move(cert)), key_file(std::move(key)), handler(std::move(h)) {}
  asio::io_context& io;
  tcp::acceptor acceptor;
  asio::steady_timer poll_timer;
  std::string cert_file, key_file;
  WebhookHandler handler;
  std::shared_ptr<const tls::ServerContexts> contexts;  // io thread only
  Stamp cert_stamp, key_stamp;
  std::atomic<std::uint64_t> handshake_failures{0}, reloads{0}, reload_failures{0};

  bool load(std::string& error) {
    config::ListenerTlsConfig c;
    config::TlsCertificateConfig pair;
    pair.cert_file = cert_file;
    pair.key_file = key_file;
    c.certificates.push_back(std::move(pair));
    const Stamp cs = stampOf(cert_file), ks = stampOf(key_file);
    auto built = tls::ServerContexts::build(c, {"http/1.1"}, error);
    if (!built) return false;
    contexts = std::move(built);
    cert_stamp = cs;
    key_stamp = ks;
    return true;
  }

  // A rotated Secret shows up as new files; the old certificate serves
  // until the new pair loads.
  static asio::awaitable<void> pollFiles(std::shared_ptr<Impl> self) {
    for (;;) {
      self->poll_timer.expires_after(std::chrono::seconds(2));
      auto [ec] = co_await self->poll_timer.async_wait(kTuple);
      if (ec) co_return;
      if (stampOf(self->cert_file) == self->cert_stamp && stampOf(self->key_file) == self->key_stamp) continue;
      std::string error;
      if (self->load(error)) {
        ++self->reloads;
        spdlog::info("webhook certificate reloaded from {}", self->cert_file);
      } else {
        ++self->reload_failures;
        // Retried on the next change only: the files may be mid-write.
        self->cert_stamp = stampOf(self->cert_file);
        self->key_stamp = stampOf(self->key_file);
        spdlog::error("webhook certificate reload failed, keeping the old one: {}", error);
      }
    }
  }

  http::response<http::string_body> respond(http::request_parser<http::string_body>& parser) {
    const auto& req = parser.get();
    http::response<http::string_body> res{http::status::ok, req.version()};
    res.set(http::field::content_type, "application/json");
    const std::string_view target = req.target();
    if (req.method() != http::verb::post) {
      res.result(http::status::method_not_allowed);
      res.set(http::field::allow, "POST");
      res.body() = "{\"error\":\"POST an AdmissionReview\"}";
    } else {
      WebhookResponse r = handler(target.substr(0, target.find('?')), req.body());
      res.result(static_cast<http::status>(r.status));
      res.body() = std::move(r.body);
    }
    res.keep_alive(req.keep_alive());
    res.prepare_payload();
    return res;
  }

  static asio::awaitable<void> session(std::shared_ptr<Impl> self, tcp::socket socket) {
    // Held for the session: a reload must not free what its handshake uses.
    const std::shared_ptr<const tls::ServerContexts> contexts = self->contexts;
    SSL* ssl = SSL_new(contexts->defaultContext());
    if (ssl == nullptr) co_return;
    asio::ssl::stream<beast::tcp_stream> stream(beast::tcp_stream(std::move(socket)), ssl);
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(10));
    if (auto [ec] = co_await stream.async_handshake(asio::ssl::stream_base::server, kTuple); ec) {
      ++self->handshake_failures;
      spdlog::debug("webhook tls handshake failed: {}", ec.message());
      co_return;
    }
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(kMaxBody);
      // The API server's own timeout is at most 30 s.
      beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(30));
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, kTuple);
      if (ec == http::error::body_limit) {
        http::response<http::string_body> res{http::status::payload_too_large, 11};
        res.set(http::field::content_type, "application/json");
        res.body() = "{\"error\":\"the body is larger than " + std::to_string(kMaxBody) + " bytes\"}";
        res.keep_alive(false);
        res.prepare_payload();
        co_await http::async_write(stream, res, kTuple);
        co_return;
      }
      if (ec) co_return;
      auto res = self->respond(parser);
      auto [wec, wn] = co_await http::async_write(stream, res, kTuple);
      if (wec || !res.keep_alive()) break;
    }
    beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(2));
    co_await stream.async_shutdown(kTuple);
  }

  static asio::awaitable<void> acceptLoop(std::shared_ptr<Impl> self) {
    for (;;) {
      auto [ec, socket] = co_await self->acceptor.async_accept(kTuple);
      if (ec == asio::error::operation_aborted || !self->acceptor.is_open()) co_return;
      if (ec) continue;  // EMFILE and friends: the next accept may succeed
      asio::co_spawn(self->io, session(self, std::move(socket)), asio::detached);
    }
  }
};

WebhookServer::WebhookServer(asio::io_context& io, const std::string& address, std::string cert_file,
                             std::string key_file, WebhookHandler handler)
    : impl_(std::make_shared<Impl>(io, std::move(cert_file), std::move(key_file), std::move(handler))) {
  std::string error;
  if (!impl_->load(error)) throw std::runtime_error(error);
  auto colon = address.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("address \"" + address + "\" is not ip:port");
  std::string host = address.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  tcp::endpoint ep(asio::ip::make_address(host), static_cast<unsigned short>(std::stoi(address.substr(colon + 1))));
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen();
}

WebhookServer::~WebhookServer() = default;

std::string WebhookServer::boundAddress() const {
  auto ep = impl_->acceptor.local_endpoint();
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

void WebhookServer::start() {
  asio::co_spawn(impl_->io, Impl::acceptLoop(impl_), asio::detached);
  asio::co_spawn(impl_->io, Impl::pollFiles(impl_), asio::detached);
}

void WebhookServer::close() {
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
  impl_->poll_timer.cancel();
}

std::uint64_t WebhookServer::handshakeFailures() const { return impl_->handshake_failures.load(); }
std::uint64_t WebhookServer::certReloads() const { return impl_->reloads.load(); }
std::uint64_t WebhookServer::certReloadFailures() const { return impl_->reload_failures.load(); }

}  // namespace infermesh::controlplane
