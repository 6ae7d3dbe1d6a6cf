#include "proxy/server/admin_http.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

namespace infermesh::proxy {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

struct AdminHttpServer::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& io, AdminHandler h) : io(io), acceptor(io), handler(std::move(h)) {}
  asio::io_context& io;
  tcp::acceptor acceptor;
  AdminHandler handler;

  http::response<http::string_body> respond(const http::request<http::string_body>& req) {
    http::response<http::string_body> res{http::status::ok, req.version()};
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      res.result(http::status::method_not_allowed);
      res.set(http::field::content_type, "text/plain");
      res.body() = "GET only\n";
    } else {
      const std::string_view target = req.target();
      AdminResponse r = handler(target.substr(0, target.find('?')));
      res.result(static_cast<http::status>(r.status));
      res.set(http::field::content_type, r.content_type);
      res.body() = std::move(r.body);
    }
    res.prepare_payload();
    return res;
  }

  static asio::awaitable<void> session(std::shared_ptr<Impl> self, beast::tcp_stream stream) {
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(64 * 1024);
      stream.expires_after(std::chrono::seconds(30));
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, kTuple);
      if (ec) co_return;
      auto res = self->respond(parser.get());
      auto [wec, wn] = co_await http::async_write(stream, res, kTuple);
      if (wec || !res.keep_alive()) co_return;
    }
  }

  static asio::awaitable<void> acceptLoop(std::shared_ptr<Impl> self) {
    for (;;) {
      auto [ec, socket] = co_await self->acceptor.async_accept(kTuple);
      if (ec) co_return;
      asio::co_spawn(self->io, session(self, beast::tcp_stream(std::move(socket))), asio::detached);
    }
  }
};

AdminHttpServer::AdminHttpServer(asio::io_context& io, const std::string& address, AdminHandler handler)
    : impl_(std::make_shared<Impl>(io, std::move(handler))) {
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

AdminHttpServer::~AdminHttpServer() = default;

std::string AdminHttpServer::boundAddress() const {
  auto ep = impl_->acceptor.local_endpoint();
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

void AdminHttpServer::start() { asio::co_spawn(impl_->io, Impl::acceptLoop(impl_), asio::detached); }

void AdminHttpServer::close() {
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
}

}  // namespace infermesh::proxy
