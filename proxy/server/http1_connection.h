#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "proxy/tls/transport.h"
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>

#include <array>
#include <chrono>
#include <memory>
#include <string>

#include "proxy/filter/stream_context.h"
#include "proxy/server/connection.h"
#include "proxy/server/stream_driver.h"

namespace spdlog {
class logger;
}

namespace infermesh::proxy {

class Worker;

// The HTTP/1.1 connection manager: parses requests with Beast's parser
// (one at a time; pipelined requests wait in the buffer and are answered in
// order), hands each to a StreamDriver, and frames what the driver writes.
class Http1Connection final : public CodecStream, public DownstreamConnection {
 public:
  Http1Connection(Worker& worker, Transport transport, std::uint32_t listener_index);
  ~Http1Connection() override;

  // Serves the connection until it closes; the coroutine owns the object.
  static boost::asio::awaitable<void> serve(std::unique_ptr<Http1Connection> self);

  // Graceful drain: an idle connection closes now, a busy one after its
  // current response (which says `connection: close`).
  void drain() override;
  void close() override;
  void setPeerIdentity(std::string id) { peer_identity_ = std::move(id); }

  // CodecStream
  bool bodyFollows() const override;
  bool continueExpected() const override { return expect_continue_; }
  boost::asio::awaitable<void> beforeBody() override;
  boost::asio::awaitable<Read> readBody(std::string_view& out) override;
  boost::asio::awaitable<bool> writeHead(filter::ResponseHead& head, bool end_stream,
                                         std::optional<std::uint64_t> content_length) override;
  boost::asio::awaitable<bool> writeBody(std::string_view bytes, bool end_stream) override;
  boost::asio::awaitable<bool> writeTrailers(const filter::HeaderList& trailers) override;
  void abortResponse() override;
  boost::asio::awaitable<bool> waitWatchingClient(Signal& done) override;

 private:
  using RequestParser = boost::beast::http::request_parser<boost::beast::http::buffer_body>;
  static constexpr std::size_t kBodyReadBytes = 16 * 1024;
  boost::asio::awaitable<void> handleStream(RequestParser& parser);
  boost::asio::awaitable<void> serveRequests();
  // Reads until buffer_ holds a whole request head of at most `limit`
  // bytes; `head_size` is its length through the blank line.
  boost::asio::awaitable<boost::system::error_code> readHead(std::size_t limit, std::size_t& head_size);
  boost::asio::awaitable<void> watchdog();
  // True when the client closed or reset the connection.
  boost::asio::awaitable<bool> clientGone();
  boost::asio::awaitable<bool> writeBuffers(const boost::asio::const_buffer* bufs, std::size_t count);
  // Answers a request that never became a stream (unparseable head).
  boost::asio::awaitable<void> rejectAndClose(unsigned status, const char* code, std::string message);
  void setDeadline(std::chrono::milliseconds d);

  Worker& worker_;
  Transport socket_;
  std::uint32_t listener_index_;
  std::string peer_ip_;
  std::string peer_identity_;  // the client certificate's SPIFFE ID (mTLS)
  boost::beast::flat_buffer buffer_;
  boost::asio::steady_timer deadline_timer_;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  std::chrono::milliseconds write_timeout_{60000};
  bool timed_out_ = false;
  bool open_ = true;
  bool idle_ = true;
  bool keep_alive_ = true;
  bool http10_ = false;
  bool is_head_ = false;
  std::size_t chunk_extension_bytes_ = 0;  // in the current request's chunk headers

  // Current stream.
  filter::StreamContext* ctx_ = nullptr;
  RequestParser* parser_ = nullptr;
  StreamDriver* driver_ = nullptr;
  bool expect_continue_ = false;
  bool response_complete_ = false;
  bool chunked_ = false;
  std::string pending_head_;  // written together with the first body bytes
  std::vector<char> body_buf_;
};

}  // namespace infermesh::proxy
