#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>

#include <memory>
#include <utility>

namespace infermesh::proxy {

// A client connection's byte stream: a plain TCP socket or TLS over one,
// chosen per connection at accept. Both codecs read and write through it
// (it is an Asio AsyncReadStream/AsyncWriteStream), so neither knows which
// it has; socket() reaches the TCP socket underneath for options, peeking
// and closing.
class Transport {
 public:
  using executor_type = boost::asio::any_io_executor;
  using TlsStream = boost::asio::ssl::stream<boost::asio::ip::tcp::socket>;

  explicit Transport(boost::asio::ip::tcp::socket socket) : plain_(std::move(socket)) {}
  explicit Transport(std::unique_ptr<TlsStream> tls) : plain_(tls->get_executor()), tls_(std::move(tls)) {}

  executor_type get_executor() { return tls_ ? tls_->get_executor() : plain_.get_executor(); }
  boost::asio::ip::tcp::socket& socket() { return tls_ ? tls_->next_layer() : plain_; }
  bool tls() const { return tls_ != nullptr; }

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
  boost::asio::ip::tcp::socket plain_;
  std::unique_ptr<TlsStream> tls_;
};

}  // namespace infermesh::proxy
