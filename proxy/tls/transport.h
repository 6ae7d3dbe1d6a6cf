#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/tcp_stream.hpp>

#include <memory>
#include <utility>

namespace infermesh::proxy {

// A connection's byte stream: plain, or TLS over the same lower layer,
// chosen per connection. Codecs and the router read and write through it
// (it is an Asio AsyncReadStream/AsyncWriteStream), so they do not know
// which it is; lower() reaches the TCP layer underneath for options,
// timeouts, peeking and closing.
template <typename Lower>
class DualStream {
 public:
  using executor_type = boost::asio::any_io_executor;
  using TlsStream = boost::asio::ssl::stream<Lower>;

  explicit DualStream(Lower lower) : plain_(std::move(lower)) {}
  explicit DualStream(std::unique_ptr<TlsStream> tls) : plain_(tls->get_executor()), tls_(std::move(tls)) {}

  executor_type get_executor() { return tls_ ? tls_->get_executor() : plain_.get_executor(); }
  Lower& lower() { return tls_ ? tls_->next_layer() : plain_; }
  bool tls() const { return tls_ != nullptr; }
  TlsStream* tlsStream() { return tls_.get(); }
  // Wraps the (connected) lower layer in TLS with `ssl` (owned from now on);
  // the caller then runs the handshake on tlsStream().
  void startTls(SSL* ssl) { tls_ = std::make_unique<TlsStream>(std::move(plain_), ssl); }

  // Same completion signature on both paths, so one return type.
  template <typename MutableBuffers, typename Token>
  auto async_read_some(const MutableBuffers& buffers, Token&& token) {
    if (tls_) return tls_->async_read_some(buffers, std::forward<Token>(token));
    return plain_.async_read_some(buffers, std::forward<Token>(token));
  }
  template <typename ConstBuffers, typename Token>
  auto async_write_some(const ConstBuffers& buffers, Token&& token) {
    if (tls_) return tls_->async_write_some(buffers, std::forward<Token>(token));
    return plain_.async_write_some(buffers, std::forward<Token>(token));
  }

 private:
  Lower plain_;  // moved into tls_ by startTls (then unused)
  std::unique_ptr<TlsStream> tls_;
};

// Client connections (accepted sockets).
using Transport = DualStream<boost::asio::ip::tcp::socket>;
// Upstream connections: Beast's tcp_stream for per-operation timeouts.
using UpstreamStream = DualStream<boost::beast::tcp_stream>;

}  // namespace infermesh::proxy
