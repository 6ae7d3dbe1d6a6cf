#include "proxy/server/http1_connection.h"
#include "proxy/server/http1_head.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <sys/socket.h>

#include <charconv>
#include <span>

#include "proxy/config/snapshot.h"
#include "proxy/server/http_util.h"
#include "proxy/server/stream_driver.h"
#include "proxy/server/worker.h"

namespace infermesh::proxy {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::use_awaitable;
using stats::DownstreamError;
constexpr auto kTuple = asio::as_tuple(use_awaitable);

namespace {

// Room in the read buffer beyond the head limit: what one read may add.
// It also bounds a chunk-size line or trailer section, which Beast buffers
// whole before it looks at them.
constexpr std::size_t kReadSlack = 64 * 1024;

}  // namespace

Http1Connection::Http1Connection(Worker& worker, Transport transport, std::uint32_t listener_index)
    : worker_(worker),
      socket_(std::move(transport)),
      listener_index_(listener_index),
      deadline_timer_(socket_.get_executor()),
      body_buf_(kBodyReadBytes) {
  boost::system::error_code ec;
  auto ep = socket_.lower().remote_endpoint(ec);
  if (!ec) peer_ip_ = ep.address().to_string();
  socket_.lower().set_option(asio::ip::tcp::no_delay(true), ec);
  worker_.track(this);
  ++worker_.stats().downstream_connections_active;
}

Http1Connection::~Http1Connection() {
  worker_.untrack(this);
  --worker_.stats().downstream_connections_active;
}

awaitable<void> Http1Connection::serve(std::unique_ptr<Http1Connection> self) {
  using namespace asio::experimental::awaitable_operators;
  // The watchdog enforces read/write deadlines by cancelling socket I/O
  // (the socket stays open, so a 408 can still be written).
  co_await (self->serveRequests() || self->watchdog());
  self->close();
}

void Http1Connection::setDeadline(std::chrono::milliseconds d) {
  timed_out_ = false;
  const auto next = std::chrono::steady_clock::now() + d;
  const bool earlier = next < deadline_;
  deadline_ = next;
  // Moving the deadline later costs nothing: the watchdog re-arms when it
  // wakes. Only an earlier deadline needs the timer moved.
  if (earlier) deadline_timer_.expires_at(deadline_);
}

awaitable<void> Http1Connection::watchdog() {
  while (open_) {
    deadline_timer_.expires_at(deadline_);
    co_await deadline_timer_.async_wait(kTuple);
    if (deadline_ <= std::chrono::steady_clock::now()) {
      timed_out_ = true;
      deadline_ = std::chrono::steady_clock::time_point::max();
      boost::system::error_code ec;
      socket_.lower().cancel(ec);
    }
  }
}

void Http1Connection::drain() {
  keep_alive_ = false;
  if (idle_) close();
}

void Http1Connection::close() {
  if (!open_) return;
  open_ = false;
  // A stream still working upstream has no client left to answer.
  if (driver_ != nullptr) driver_->clientGone();
  boost::system::error_code ec;
  socket_.lower().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.lower().close(ec);
  deadline_timer_.cancel();
}

awaitable<bool> Http1Connection::writeBuffers(const asio::const_buffer* bufs, std::size_t count) {
  setDeadline(write_timeout_);
  auto [ec, n] = co_await asio::async_write(socket_, std::span<const asio::const_buffer>(bufs, count), kTuple);
  if (ec) {
    keep_alive_ = false;
    co_return false;
  }
  co_return true;
}

awaitable<void> Http1Connection::rejectAndClose(unsigned status, const char* code, std::string message) {
  filter::LocalReply reply;
  reply.status = status;
  reply.message = std::move(message);
  reply.type = "invalid_request_error";
  reply.code = code;
  std::string body = openAiErrorJson(reply);
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " +
                     std::string(http::obsolete_reason(static_cast<http::status>(status))) +
                     "\r\ncontent-type: application/json\r\ncontent-length: " + std::to_string(body.size()) +
                     "\r\nconnection: close\r\n\r\n";
  asio::const_buffer bufs[] = {asio::buffer(head), asio::buffer(body)};
  co_await writeBuffers(bufs, 2);
  worker_.stats().countRequest(0, 0, status);
  keep_alive_ = false;
}

awaitable<boost::system::error_code> Http1Connection::readHead(std::size_t limit, std::size_t& head_size) {
  std::size_t searched = 0;
  for (;;) {
    const std::string_view data(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    const HeadScan scan = scanHead(data, limit, searched, head_size);
    if (scan == HeadScan::Complete) co_return boost::system::error_code{};
    if (scan == HeadScan::TooLarge) co_return http::error::header_limit;
    const std::size_t room = buffer_.max_size() - buffer_.size();
    auto [ec, n] = co_await socket_.async_read_some(buffer_.prepare(std::min<std::size_t>(room, 16 * 1024)), kTuple);
    buffer_.commit(n);
    // As Beast reports it: a head cut short is a partial message, a
    // connection closed between requests the end of the stream.
    if (ec == asio::error::eof) co_return buffer_.size() ? http::error::partial_message : http::error::end_of_stream;
    if (ec) co_return ec;
  }
}

awaitable<void> Http1Connection::serveRequests() {
  while (open_ && keep_alive_ && !worker_.draining()) {
    // A copy: a reload may replace the worker's snapshot while we wait.
    const auto snapshot = worker_.snapshot();
    const auto& limits = snapshot->listeners[listener_index_].limits;
    write_timeout_ = limits.idle_timeout;
    buffer_.max_size(std::max<std::size_t>(buffer_.size(), limits.max_request_header_bytes + kReadSlack));
    // Declared before the parser, which keeps a reference to it.
    chunk_extension_bytes_ = 0;
    auto on_chunk_header = [this](std::uint64_t, std::string_view extensions, boost::system::error_code& cec) {
      chunk_extension_bytes_ += extensions.size();
      if (chunk_extension_bytes_ > kMaxChunkExtensionBytes) cec = http::error::bad_chunk_extension;
    };
    http::request_parser<http::buffer_body> parser;
    parser.header_limit(limits.max_request_header_bytes);
    parser.body_limit(limits.max_request_body_bytes);
    parser.on_chunk_header(on_chunk_header);

    // Waiting for the next request is idle time (closed quietly when it
    // runs out); from the first byte on, the header timeout applies. With
    // TLS the next request may already sit in the TLS layer's buffer, where
    // the socket's readiness does not show it: the head is read at once,
    // under the idle deadline.
    bool idle_read = false;
    if (buffer_.size() == 0 && socket_.tls()) {
      idle_read = idle_ = true;  // a drain may close it meanwhile
      setDeadline(limits.idle_timeout);
    } else if (buffer_.size() == 0) {
      idle_ = true;
      setDeadline(limits.idle_timeout);
      auto [wec] = co_await socket_.lower().async_wait(asio::ip::tcp::socket::wait_read, kTuple);
      idle_ = false;
      if (wec || !open_ || worker_.draining()) co_return;
    }
    if (!idle_read) setDeadline(limits.header_timeout);
    // The head is read whole before Beast parses it, to be checked raw
    // first: Beast joins obs-fold lines into the previous value without a
    // word, and bounds a head's bytes but not its number of fields.
    std::size_t head_size = 0;
    auto ec = co_await readHead(limits.max_request_header_bytes, head_size);
    if (!ec) {
      const auto shape = inspectHead(std::string_view(static_cast<const char*>(buffer_.data().data()), head_size));
      if (shape.folded) {
        worker_.stats().count(DownstreamError::BadRequest);
        co_await rejectAndClose(400, "bad_request", "obsolete line folding in request headers");
        co_return;
      }
      if (shape.fields > limits.max_request_headers) {
        worker_.stats().count(DownstreamError::HeaderTooLarge);
        co_await rejectAndClose(431, "request_header_too_large",
                                "more than " + std::to_string(limits.max_request_headers) + " request header fields");
        co_return;
      }
      auto [pec, n] = co_await http::async_read_header(socket_, buffer_, parser, kTuple);
      ec = pec;
    }
    idle_ = false;
    if (ec) {
      if (!open_) co_return;
      // Idle time ran out, or the client closed, before a byte arrived.
      if (idle_read && !parser.got_some() && buffer_.size() == 0) co_return;
      if (timed_out_) {
        worker_.stats().count(DownstreamError::Timeout);
        co_await rejectAndClose(408, "request_timeout", "request headers not received in time");
      } else if (ec == http::error::header_limit) {
        worker_.stats().count(DownstreamError::HeaderTooLarge);
        co_await rejectAndClose(431, "request_header_too_large",
                                "request headers exceed " + std::to_string(limits.max_request_header_bytes) + " bytes");
      } else if (ec == http::error::body_limit) {
        worker_.stats().count(DownstreamError::BodyTooLarge);
        co_await rejectAndClose(413, "request_too_large",
                                "request body exceeds " + std::to_string(limits.max_request_body_bytes) + " bytes");
      } else if (ec != http::error::end_of_stream && ec != asio::error::eof &&
                 ec != asio::error::connection_reset && ec != asio::error::operation_aborted) {
        worker_.stats().count(DownstreamError::BadRequest);
        co_await rejectAndClose(400, "bad_request", "malformed HTTP request: " + ec.message());
      }
      co_return;
    }
    if (const char* why = requestFramingError(parser.get())) {
      worker_.stats().count(DownstreamError::BadRequest);
      co_await rejectAndClose(400, "bad_request", why);
      co_return;
    }
    co_await handleStream(parser);
  }
}

awaitable<bool> Http1Connection::clientGone() {
  auto [ec] = co_await socket_.lower().async_wait(asio::ip::tcp::socket::wait_read, kTuple);
  if (ec) co_return false;  // cancelled: the response finished first
  char byte;
  const ssize_t n = ::recv(socket_.lower().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) co_return true;
  // Bytes of a pipelined request: not a disconnect; stop watching.
  co_return false;
}

awaitable<void> Http1Connection::handleStream(RequestParser& parser) {
  auto& req = parser.get();
  filter::StreamContext ctx;
  ctx.snapshot = worker_.snapshot();
  ctx.listener = &ctx.snapshot->listeners[listener_index_];
  ctx.worker = &worker_;
  ctx.start = std::chrono::steady_clock::now();
  ctx.client_address = peer_ip_;
  ctx.peer_identity = peer_identity_;
  ctx.request.method.assign(req.method_string());
  ctx.request.target.assign(req.target());
  for (const auto& f : req) ctx.request.headers.add(std::string(f.name_string()), std::string(f.value()));
  auto incoming_id = ctx.request.headers.get("x-request-id");
  ctx.request_id = incoming_id && validRequestId(*incoming_id) ? std::string(*incoming_id) : worker_.newRequestId();
  http10_ = req.version() < 11;
  is_head_ = req.method() == http::verb::head;
  keep_alive_ = keep_alive_ && req.keep_alive() && !worker_.draining();
  expect_continue_ = filter::equalsIgnoreCase(req[http::field::expect], "100-continue");
  response_complete_ = chunked_ = false;
  pending_head_.clear();
  ctx_ = &ctx;
  parser_ = &parser;
  {
    StreamDriver driver(worker_, ctx, *this, listener_index_);
    driver_ = &driver;
    co_await driver.run();
    driver_ = nullptr;
  }
  // What is left of a body nobody read, or an unfinished response, leaves
  // the connection unusable for the next request.
  if (!parser.is_done() || !response_complete_) keep_alive_ = false;
  ctx_ = nullptr;
  parser_ = nullptr;
}

bool Http1Connection::bodyFollows() const { return !parser_->is_done(); }

awaitable<void> Http1Connection::beforeBody() {
  if (!expect_continue_) co_return;
  static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
  asio::const_buffer b = asio::buffer(kContinue);
  co_await writeBuffers(&b, 1);
}

awaitable<CodecStream::Read> Http1Connection::readBody(std::string_view& out) {
  auto& parser = *parser_;
  auto& req = parser.get();
  auto& ctx = *ctx_;
  const auto& limits = ctx.listener->limits;
  req.body().data = body_buf_.data();
  req.body().size = body_buf_.size();
  setDeadline(limits.body_timeout);
  auto [ec, n] = co_await http::async_read(socket_, buffer_, parser, kTuple);
  if (ec == http::error::need_buffer) ec = {};
  if (ec) {
    keep_alive_ = false;
    if (timed_out_) {
      worker_.stats().count(DownstreamError::Timeout);
      ctx.sendLocalReply(408, "request body not received in time", "invalid_request_error", "request_timeout");
    } else if (ec == http::error::body_limit) {
      worker_.stats().count(DownstreamError::BodyTooLarge);
      ctx.sendLocalReply(413, "request body exceeds " + std::to_string(limits.max_request_body_bytes) + " bytes",
                         "invalid_request_error", "request_too_large");
    } else if (ec == http::error::partial_message || ec == asio::error::eof || ec == asio::error::connection_reset ||
               !open_) {
      ctx.error_source = filter::ErrorSource::Downstream;
      ctx.error_reason = "client_disconnected";  // nobody to answer
    } else if (chunk_extension_bytes_ > kMaxChunkExtensionBytes) {
      worker_.stats().count(DownstreamError::BadRequest);
      ctx.sendLocalReply(400, "chunk extensions exceed " + std::to_string(kMaxChunkExtensionBytes) + " bytes",
                         "invalid_request_error", "bad_request");
    } else if (ec == http::error::buffer_overflow) {
      worker_.stats().count(DownstreamError::BadRequest);
      ctx.sendLocalReply(400, "chunk header or trailers too long", "invalid_request_error", "bad_request");
    } else {
      worker_.stats().count(DownstreamError::BadRequest);
      ctx.sendLocalReply(400, "malformed request body: " + ec.message(), "invalid_request_error", "bad_request");
    }
    co_return Read::Failed;
  }
  out = std::string_view(body_buf_.data(), body_buf_.size() - req.body().size);
  co_return parser.is_done() ? Read::Last : Read::More;
}

awaitable<bool> Http1Connection::waitWatchingClient(Signal& done) {
  // Meanwhile the client socket may turn readable: a client that hangs up
  // is noticed now, not at the next write.
  using namespace asio::experimental::awaitable_operators;
  auto first = co_await (done.wait() || clientGone());
  if (first.index() == 1 && std::get<1>(first)) {
    keep_alive_ = false;
    co_return true;
  }
  co_return false;
}

awaitable<bool> Http1Connection::writeHead(filter::ResponseHead& head, bool end_stream,
                                           std::optional<std::uint64_t> content_length) {
  std::string& out = pending_head_;
  out.reserve(256);
  out += "HTTP/1.1 ";
  out += std::to_string(head.status);
  out += ' ';
  out += head.reason.empty() ? std::string_view(http::obsolete_reason(static_cast<http::status>(head.status)))
                             : std::string_view(head.reason);
  out += "\r\n";
  for (const auto& [name, value] : head.headers.fields()) {
    out += name;
    out += ": ";
    out += value;
    out += "\r\n";
  }
  const bool bodyless = is_head_ || head.status == 204 || head.status == 304 || head.status < 200;
  if (content_length) {
    out += "content-length: " + std::to_string(*content_length) + "\r\n";
  } else if (!bodyless && !end_stream) {
    if (http10_) {
      keep_alive_ = false;  // HTTP/1.0 has no chunked framing: end by closing
    } else {
      chunked_ = true;
      out += "transfer-encoding: chunked\r\n";
    }
  } else if (!bodyless) {
    out += "content-length: 0\r\n";
  }
  if (!keep_alive_ || worker_.draining()) {
    keep_alive_ = false;
    out += "connection: close\r\n";
  } else if (http10_) {
    out += "connection: keep-alive\r\n";
  }
  out += "\r\n";
  if (!end_stream) co_return true;  // goes out with the first body bytes
  asio::const_buffer b = asio::buffer(out);
  bool ok = co_await writeBuffers(&b, 1);
  response_complete_ = ok;
  pending_head_.clear();
  co_return ok;
}

awaitable<bool> Http1Connection::writeBody(std::string_view chunk, bool end_stream) {
  char size_line[24];
  std::size_t size_len = 0;
  asio::const_buffer bufs[5];
  std::size_t n = 0;
  if (!pending_head_.empty()) bufs[n++] = asio::buffer(pending_head_);
  if (chunked_ && !chunk.empty()) {
    auto [p, ec] = std::to_chars(size_line, size_line + 16, chunk.size(), 16);
    *p++ = '\r';
    *p++ = '\n';
    size_len = static_cast<std::size_t>(p - size_line);
    bufs[n++] = asio::buffer(size_line, size_len);
    bufs[n++] = asio::buffer(chunk);
    bufs[n++] = asio::buffer("\r\n", 2);
  } else if (!chunk.empty()) {
    bufs[n++] = asio::buffer(chunk);
  }
  if (chunked_ && end_stream) bufs[n++] = asio::buffer("0\r\n\r\n", 5);
  bool ok = n == 0 || co_await writeBuffers(bufs, n);
  pending_head_.clear();
  if (ok && end_stream) response_complete_ = true;
  co_return ok;
}

awaitable<bool> Http1Connection::writeTrailers(const filter::HeaderList& trailers) {
  if (!chunked_) co_return co_await writeBody({}, true);
  // Chunked framing carries trailers after the last chunk.
  std::string tail = "0\r\n";
  for (const auto& [name, value] : trailers.fields()) {
    tail += name;
    tail += ": ";
    tail += value;
    tail += "\r\n";
  }
  tail += "\r\n";
  asio::const_buffer bufs[2];
  std::size_t n = 0;
  if (!pending_head_.empty()) bufs[n++] = asio::buffer(pending_head_);
  bufs[n++] = asio::buffer(tail);
  const bool ok = co_await writeBuffers(bufs, n);
  pending_head_.clear();
  if (ok) response_complete_ = true;
  co_return ok;
}

void Http1Connection::abortResponse() {
  keep_alive_ = false;
  // Closing without the final chunk (or short of the content length) is
  // how HTTP/1.1 tells the client the response is incomplete.
  close();
}

}  // namespace infermesh::proxy
