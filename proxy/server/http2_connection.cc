#include "proxy/server/http2_connection.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <nghttp2/nghttp2.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "proxy/config/snapshot.h"
#include "proxy/server/stream_driver.h"
#include "proxy/server/http_util.h"
#include "proxy/server/worker.h"

namespace infermesh::proxy {

namespace asio = boost::asio;
using asio::awaitable;
using stats::DownstreamError;
using stats::Http2Protection;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

namespace {

// A response waits for the client once this much is queued for the stream:
// the terminal filter's next write blocks, so it stops reading upstream.
constexpr std::size_t kStreamSendBuffer = 64 * 1024;
// Per-second ceilings on frames that cost the client nothing to send.
constexpr std::uint32_t kMaxResetsPerSecond = 100;
constexpr std::uint32_t kMaxPingsPerSecond = 50;
constexpr std::uint32_t kMaxSettingsPerSecond = 50;
constexpr std::uint32_t kMaxEmptyDataPerSecond = 100;

bool connectionSpecific(std::string_view name) {
  // Not allowed in HTTP/2 (RFC 9113 section 8.2.2).
  return isHopByHop(name) || filter::equalsIgnoreCase(name, "content-length");
}

}  // namespace

// One request/response exchange on the connection.
struct Http2Stream final : public CodecStream {
  Http2Stream(Http2Connection& c, std::int32_t stream_id)
      : conn(c), id(stream_id), body_arrived(c.worker().io().get_executor()),
        drained(c.worker().io().get_executor()) {}

  Http2Connection& conn;
  std::int32_t id;
  filter::StreamContext ctx;
  StreamDriver* driver = nullptr;
  std::uint64_t header_bytes = 0;
  std::uint32_t header_count = 0;
  bool headers_too_large = false;
  bool too_many_headers = false;
  bool started = false;         // the stream coroutine runs
  bool coroutine_done = false;  // ... and has finished
  bool closed = false;          // nghttp2 closed the stream (either side)

  // Request body, as received and not yet handed to the filters.
  std::string body_in;
  std::string body_out;  // the piece the filters are looking at
  bool body_complete = false;
  bool body_too_large = false;
  Signal body_arrived;

  // Response.
  std::string out;
  std::size_t out_sent = 0;
  bool out_eof = false;
  bool response_started = false;
  bool response_complete = false;
  bool aborted = false;
  bool reset_after_data = false;  // aborted with data still queued
  filter::HeaderList trailers;    // sent after the data (gRPC status)
  bool has_trailers = false;
  Signal drained;

  nghttp2_session* session() { return conn.session(); }

  bool bodyFollows() const override { return !(body_complete && body_in.empty()); }

  awaitable<Read> readBody(std::string_view& out) override {
    auto& limits = ctx.listener->limits;
    while (body_in.empty() && !body_complete && !closed) {
      body_arrived.reset();
      co_await body_arrived.wait();
    }
    if (body_too_large) {
      conn.worker().stats().count(DownstreamError::BodyTooLarge);
      ctx.sendLocalReply(413, "request body exceeds " + std::to_string(limits.max_request_body_bytes) + " bytes",
                         "invalid_request_error", "request_too_large");
      co_return Read::Failed;
    }
    if (body_in.empty() && !body_complete) {
      // The client reset the stream before the request ended.
      ctx.error_source = filter::ErrorSource::Downstream;
      ctx.error_reason = "client_disconnected";
      co_return Read::Failed;
    }
    body_out = std::move(body_in);
    body_in.clear();
    // Open the flow-control window only as the filters take the data.
    nghttp2_session_consume(conn.session(), id, body_out.size());
    conn.wantWrite();
    out = body_out;
    co_return body_complete && body_in.empty() ? Read::Last : Read::More;
  }

  awaitable<bool> waitWatchingClient(Signal& done) override {
    // A client reset reaches the driver through onStreamClose.
    while (!done.notified()) co_await done.wait();
    co_return false;
  }

  awaitable<bool> writeHead(filter::ResponseHead& head, bool end_stream,
                            std::optional<std::uint64_t> content_length) override {
    response_started = true;
    if (closed) co_return false;
    const std::string status = std::to_string(head.status);
    const std::string length = content_length ? std::to_string(*content_length) : std::string();
    std::vector<std::string> lowered;
    lowered.reserve(head.headers.fields().size());
    std::vector<nghttp2_nv> nva;
    nva.reserve(head.headers.fields().size() + 2);
    auto add = [&](std::string_view name, std::string_view value) {
      nva.push_back(nghttp2_nv{reinterpret_cast<std::uint8_t*>(const_cast<char*>(name.data())),
                               reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), name.size(),
                               value.size(), NGHTTP2_NV_FLAG_NONE});
    };
    add(":status", status);
    for (const auto& [name, value] : head.headers.fields()) {
      if (connectionSpecific(name)) continue;
      std::string& l = lowered.emplace_back(name);
      for (auto& ch : l) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      add(l, value);
    }
    if (content_length) add("content-length", length);
    nghttp2_data_provider provider{};
    provider.read_callback = &readCallback;
    out_eof = end_stream;
    if (nghttp2_submit_response(session(), id, nva.data(), nva.size(), end_stream ? nullptr : &provider) != 0)
      co_return false;
    if (end_stream) response_complete = true;
    conn.wantWrite();
    co_return true;
  }

  awaitable<bool> writeBody(std::string_view chunk, bool end_stream) override {
    if (closed) co_return false;
    out.append(chunk);
    out_eof = end_stream;
    nghttp2_session_resume_data(session(), id);
    conn.wantWrite();
    // Backpressure: wait while the client has not taken what is queued.
    while (!closed && out.size() - out_sent > kStreamSendBuffer) {
      drained.reset();
      co_await drained.wait();
    }
    if (closed) co_return false;
    if (end_stream) response_complete = true;
    co_return true;
  }

  awaitable<bool> writeTrailers(const filter::HeaderList& list) override {
    if (closed) co_return false;
    trailers = list;
    out_eof = true;
    has_trailers = true;
    nghttp2_session_resume_data(session(), id);
    conn.wantWrite();
    response_complete = true;
    co_return true;
  }

  // A response that failed after it started ends with RST_STREAM: the
  // client sees an error, never a clean end of stream.
  void abortResponse() override {
    if (aborted) return;
    aborted = true;
    if (closed) return;
    out_eof = false;
    if (!response_started || out.size() == out_sent) {
      nghttp2_submit_rst_stream(session(), NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    } else {
      // What is queued goes first (an SSE error event, say), then the
      // reset: the data source fails once it is empty (see readCallback).
      reset_after_data = true;
      nghttp2_session_resume_data(session(), id);
    }
    conn.wantWrite();
  }

  static ssize_t readCallback(nghttp2_session* session, std::int32_t stream_id, std::uint8_t* buf, std::size_t length,
                              std::uint32_t* data_flags, nghttp2_data_source*, void*) {
    auto* s = static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session, stream_id));
    if (s == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    // Failing the data source makes nghttp2 reset the stream (INTERNAL_ERROR).
    if (s->reset_after_data && s->out.size() == s->out_sent) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    const std::size_t n = std::min(length, s->out.size() - s->out_sent);
    std::memcpy(buf, s->out.data() + s->out_sent, n);
    s->out_sent += n;
    if (s->out_sent == s->out.size()) {
      s->out.clear();
      s->out_sent = 0;
    }
    if (s->out.size() - s->out_sent <= kStreamSendBuffer) s->drained.notify();
    if (s->out.empty() && s->out_eof) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      if (s->has_trailers) {
        // The stream ends with a HEADERS frame instead.
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        std::vector<std::string> names;
        std::vector<nghttp2_nv> nva;
        names.reserve(s->trailers.fields().size());
        for (const auto& [name, value] : s->trailers.fields()) {
          std::string& l = names.emplace_back(name);
          for (auto& ch : l) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
          nva.push_back(nghttp2_nv{reinterpret_cast<std::uint8_t*>(l.data()),
                                   reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), l.size(),
                                   value.size(), NGHTTP2_NV_FLAG_NONE});
        }
        nghttp2_submit_trailer(session, stream_id, nva.data(), nva.size());
      }
      return static_cast<ssize_t>(n);
    }
    if (n == 0) return s->reset_after_data ? NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE : NGHTTP2_ERR_DEFERRED;
    return static_cast<ssize_t>(n);
  }
};

namespace {

// The life of one request on its own coroutine, as for HTTP/1.1: the
// stream driver runs the filter chain and the terminal filter's response.
awaitable<void> runStream(Http2Stream& s) {
  Http2Connection& conn = s.conn;
  auto& ctx = s.ctx;
  const auto& limits = ctx.listener->limits;
  // Limits nghttp2 cannot apply: answered before any filter runs.
  if (s.headers_too_large) {
    conn.worker().stats().count(DownstreamError::HeaderTooLarge);
    ctx.sendLocalReply(431, "request headers exceed " + std::to_string(limits.max_request_header_bytes) + " bytes",
                       "invalid_request_error", "request_header_too_large");
  } else if (s.too_many_headers) {
    conn.worker().stats().count(DownstreamError::HeaderTooLarge);
    ctx.sendLocalReply(431, "more than " + std::to_string(limits.max_request_headers) + " request header fields",
                       "invalid_request_error", "request_header_too_large");
  }
  {
    StreamDriver driver(conn.worker(), ctx, s, conn.listenerIndex());
    s.driver = &driver;
    co_await driver.run();
    s.driver = nullptr;
  }
  conn.streamFinished(s);
}

}  // namespace

struct Http2Connection::Callbacks {
  static Http2Stream* stream(nghttp2_session* session, std::int32_t id) {
    return static_cast<Http2Stream*>(nghttp2_session_get_stream_user_data(session, id));
  }

  static int onBeginHeaders(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    auto& c = *static_cast<Http2Connection*>(user);
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    if (c.draining_) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    auto s = std::make_unique<Http2Stream>(c, frame->hd.stream_id);
    auto& ctx = s->ctx;
    ctx.snapshot = c.worker_.snapshot();
    ctx.listener = &ctx.snapshot->listeners[c.listener_index_];
    ctx.worker = &c.worker_;
    ctx.start = std::chrono::steady_clock::now();
    ctx.client_address = c.peer_ip_;
    ctx.peer_identity = c.peer_identity_;
    ctx.protocol = "HTTP/2";
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s.get());
    c.streams_[frame->hd.stream_id] = std::move(s);
    return 0;
  }

  static int onHeader(nghttp2_session* session, const nghttp2_frame* frame, const std::uint8_t* name,
                      std::size_t namelen, const std::uint8_t* value, std::size_t valuelen, std::uint8_t, void*) {
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    auto* s = stream(session, frame->hd.stream_id);
    if (s == nullptr) return 0;
    const std::string_view n(reinterpret_cast<const char*>(name), namelen);
    const std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    // Counted as HPACK does (RFC 7541 section 4.1), against the listener's
    // header limit; too much gets a 431 once the head is complete.
    s->header_bytes += namelen + valuelen + 32;
    if (s->header_bytes > s->ctx.listener->limits.max_request_header_bytes) {
      s->headers_too_large = true;
      return 0;
    }
    // Many small fields cost a map entry each, which the byte limit alone
    // lets through by the thousand; pseudo-headers are bounded by nghttp2.
    if (!n.empty() && n[0] != ':' && ++s->header_count > s->ctx.listener->limits.max_request_headers) {
      s->too_many_headers = true;
      return 0;
    }
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;  // trailers: not forwarded
    auto& req = s->ctx.request;
    if (n == ":method") req.method.assign(v);
    else if (n == ":path") req.target.assign(v);
    else if (n == ":authority") req.headers.add("host", std::string(v));
    else if (!n.empty() && n[0] == ':') return 0;  // :scheme, :protocol
    else req.headers.add(std::string(n), std::string(v));
    return 0;
  }

  static int onFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    auto& c = *static_cast<Http2Connection*>(user);
    c.countFrame(frame->hd.type, frame->hd.flags, frame->hd.length);
    auto* s = frame->hd.stream_id ? stream(session, frame->hd.stream_id) : nullptr;
    if (s == nullptr) return 0;
    const bool end_stream = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    if (frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_HEADERS) && !s->started) {
      s->body_complete = end_stream;
      s->started = true;
      auto& ctx = s->ctx;
      auto incoming_id = ctx.request.headers.get("x-request-id");
      ctx.request_id =
          incoming_id && validRequestId(*incoming_id) ? std::string(*incoming_id) : c.worker_.newRequestId();
      ++c.running_streams_;
      asio::co_spawn(c.worker_.io(), runStream(*s), asio::detached);
    } else if (end_stream) {
      s->body_complete = true;
      s->body_arrived.notify();
    }
    return 0;
  }

  static int onDataChunk(nghttp2_session* session, std::uint8_t, std::int32_t id, const std::uint8_t* data,
                         std::size_t len, void*) {
    auto* s = stream(session, id);
    if (s == nullptr) return 0;
    if (s->body_too_large) {
      nghttp2_session_consume(session, id, len);  // keep the connection window open
      return 0;
    }
    s->body_in.append(reinterpret_cast<const char*>(data), len);
    if (s->ctx.request_body_bytes + s->body_in.size() > s->ctx.listener->limits.max_request_body_bytes)
      s->body_too_large = true;
    s->body_arrived.notify();
    return 0;
  }

  // A frame nghttp2 refused (and answered with RST_STREAM or GOAWAY):
  // counted, by whether it tried to open more streams than allowed.
  static int onInvalidFrame(nghttp2_session*, const nghttp2_frame* frame, int lib_error_code, void* user) {
    auto& c = *static_cast<Http2Connection*>(user);
    const auto limit = c.worker_.snapshot()->listeners[c.listener_index_].limits.max_concurrent_streams;
    const bool over_limit = frame->hd.type == NGHTTP2_HEADERS &&
                            (lib_error_code == NGHTTP2_ERR_REFUSED_STREAM || c.streams_.size() >= limit);
    c.worker_.stats().count(over_limit ? Http2Protection::StreamLimit : Http2Protection::ProtocolError);
    return 0;
  }

  static int onStreamClose(nghttp2_session*, std::int32_t id, std::uint32_t error_code, void* user) {
    auto& c = *static_cast<Http2Connection*>(user);
    auto it = c.streams_.find(id);
    if (it == c.streams_.end()) return 0;
    auto& s = *it->second;
    s.closed = true;
    if (!s.response_complete && !s.aborted) {
      // The client reset the stream (or the connection went): whatever the
      // terminal filter is doing upstream has nobody to answer.
      if (s.started && !s.coroutine_done) {
        ++c.worker_.stats().downstream_disconnects;
        s.ctx.error_source = filter::ErrorSource::Downstream;
        s.ctx.error_reason = "client_disconnected";
        if (s.driver) s.driver->clientGone();
      }
    }
    s.body_arrived.notify();
    s.drained.notify();
    c.maybeRelease(id);
    return 0;
  }
};

Http2Connection::Http2Connection(Worker& worker, Transport transport, std::uint32_t listener_index)
    : worker_(worker),
      socket_(std::move(transport)),
      listener_index_(listener_index),
      want_write_(socket_.get_executor()),
      all_streams_done_(socket_.get_executor()) {
  boost::system::error_code ec;
  auto ep = socket_.lower().remote_endpoint(ec);
  if (!ec) peer_ip_ = ep.address().to_string();
  socket_.lower().set_option(asio::ip::tcp::no_delay(true), ec);

  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &Callbacks::onBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &Callbacks::onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Callbacks::onFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Callbacks::onDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Callbacks::onStreamClose);
  nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, &Callbacks::onInvalidFrame);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  // Request windows open as the filters take the data (backpressure).
  nghttp2_option_set_no_auto_window_update(opt, 1);
  // The library's own guards, below our per-second ones in reach: queued
  // PING/SETTINGS acknowledgements, entries per SETTINGS frame and the
  // rapid-reset pattern (CVE-2023-44487).
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 200);
  nghttp2_session_server_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);

  const auto& limits = worker_.snapshot()->listeners[listener_index_].limits;
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1024 * 1024},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits.max_request_header_bytes},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  // A larger connection window than the default 64 KiB, so one stream's
  // unread body does not stall the others.
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, 16 * 1024 * 1024);
  worker_.track(this);
  ++worker_.stats().downstream_connections_active;
}

Http2Connection::~Http2Connection() {
  nghttp2_session_del(session_);
  worker_.untrack(this);
  --worker_.stats().downstream_connections_active;
}

awaitable<void> Http2Connection::serve(std::unique_ptr<Http2Connection> self) {
  using namespace asio::experimental::awaitable_operators;
  self->wantWrite();  // our SETTINGS
  co_await (self->readLoop() || self->writeLoop());
  self->close();
  // Every stream coroutine refers to this connection: wait for them.
  while (self->running_streams_ > 0) {
    self->all_streams_done_.reset();
    co_await self->all_streams_done_.wait();
  }
}

void Http2Connection::countFrame(std::uint8_t type, std::uint8_t flags, std::size_t length) {
  const auto now = std::chrono::steady_clock::now();
  if (now - window_start_ >= std::chrono::seconds(1)) {
    window_start_ = now;
    resets_in_window_ = pings_in_window_ = settings_in_window_ = empty_data_in_window_ = 0;
  }
  switch (type) {
    case NGHTTP2_RST_STREAM:
      if (++resets_in_window_ > kMaxResetsPerSecond) enhanceYourCalm(Http2Protection::RapidReset);
      break;
    case NGHTTP2_PING:
      if (++pings_in_window_ > kMaxPingsPerSecond) enhanceYourCalm(Http2Protection::PingFlood);
      break;
    case NGHTTP2_SETTINGS:
      if (++settings_in_window_ > kMaxSettingsPerSecond) enhanceYourCalm(Http2Protection::SettingsFlood);
      break;
    case NGHTTP2_DATA:
      if (length == 0 && !(flags & NGHTTP2_FLAG_END_STREAM) &&
          ++empty_data_in_window_ > kMaxEmptyDataPerSecond)
        enhanceYourCalm(Http2Protection::EmptyFrames);
      break;
    default:
      break;
  }
}

void Http2Connection::enhanceYourCalm(Http2Protection why) {
  if (calmed_) return;
  calmed_ = true;
  worker_.stats().count(why);
  spdlog::warn("http2: closing connection from {}: {}", peer_ip_, stats::kHttp2ProtectionNames[static_cast<int>(why)]);
  nghttp2_session_terminate_session(session_, NGHTTP2_ENHANCE_YOUR_CALM);
  wantWrite();
}

awaitable<void> Http2Connection::readLoop() {
  std::array<std::uint8_t, 16 * 1024> buf;
  asio::steady_timer idle(socket_.get_executor());
  for (;;) {
    if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) co_return;
    if (draining_ && streams_.empty()) co_return;
    // With no stream open, the listener's idle timeout applies.
    using namespace asio::experimental::awaitable_operators;
    std::size_t n = 0;
    boost::system::error_code ec;
    if (streams_.empty()) {
      idle.expires_after(worker_.snapshot()->listeners[listener_index_].limits.idle_timeout);
      auto r = co_await (socket_.async_read_some(asio::buffer(buf), kTuple) || idle.async_wait(kTuple));
      if (r.index() == 1) {
        nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
        wantWrite();
        co_return;
      }
      std::tie(ec, n) = std::get<0>(r);
    } else {
      std::tie(ec, n) = co_await socket_.async_read_some(asio::buffer(buf), kTuple);
    }
    if (ec) co_return;
    const ssize_t rv = nghttp2_session_mem_recv(session_, buf.data(), n);
    if (rv < 0) {
      worker_.stats().count(DownstreamError::BadRequest);
      worker_.stats().count(Http2Protection::ProtocolError);
      spdlog::debug("http2: {} from {}", nghttp2_strerror(static_cast<int>(rv)), peer_ip_);
      co_return;
    }
    wantWrite();
  }
}

awaitable<void> Http2Connection::writeLoop() {
  std::string pending;
  const auto write_timeout = worker_.snapshot()->listeners[listener_index_].limits.idle_timeout;
  asio::steady_timer timer(socket_.get_executor());
  for (;;) {
    for (;;) {
      const std::uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session_, &data);
      if (n < 0) co_return;
      if (n == 0) break;
      pending.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
      if (pending.size() >= 64 * 1024) break;
    }
    if (!pending.empty()) {
      // A client that does not read gets the idle timeout, then is closed.
      using namespace asio::experimental::awaitable_operators;
      timer.expires_after(write_timeout);
      auto r = co_await (asio::async_write(socket_, asio::buffer(pending), kTuple) || timer.async_wait(kTuple));
      if (r.index() == 1 || std::get<0>(std::get<0>(r))) co_return;
      pending.clear();
      continue;
    }
    if (!nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) co_return;
    if (draining_ && streams_.empty()) co_return;
    want_write_.reset();
    co_await want_write_.wait();
  }
}

void Http2Connection::streamFinished(Http2Stream& s) {
  s.coroutine_done = true;
  if (--running_streams_ == 0) all_streams_done_.notify();
  // The response is complete (or was reset): nghttp2 may still be sending
  // it; the stream is released when nghttp2 closes it.
  if (!s.closed && !s.response_complete && !s.aborted) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_CANCEL);
  }
  wantWrite();
  maybeRelease(s.id);
}

void Http2Connection::maybeRelease(std::int32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return;
  auto& s = *it->second;
  // Both sides must be done: nghttp2 (closed) and the coroutine.
  if (!s.closed || (s.started && !s.coroutine_done)) return;
  nghttp2_session_set_stream_user_data(session_, id, nullptr);
  streams_.erase(it);
  if (draining_ && streams_.empty()) wantWrite();
}

void Http2Connection::drain() {
  if (draining_ || !open_) return;
  draining_ = true;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
  wantWrite();
}

void Http2Connection::close() {
  if (!open_) return;
  open_ = false;
  for (auto& [id, s] : streams_) {
    if (s->closed) continue;
    s->closed = true;
    if (s->started && !s->coroutine_done && !s->response_complete) {
      s->ctx.error_source = filter::ErrorSource::Downstream;
      if (s->ctx.error_reason.empty()) s->ctx.error_reason = "client_disconnected";
      if (s->driver) s->driver->clientGone();
    }
    s->body_arrived.notify();
    s->drained.notify();
  }
  // Streams whose coroutine never started can go now.
  for (auto it = streams_.begin(); it != streams_.end();) {
    if (it->second->started && !it->second->coroutine_done) {
      ++it;
      continue;
    }
    nghttp2_session_set_stream_user_data(session_, it->first, nullptr);
    it = streams_.erase(it);
  }
  boost::system::error_code ec;
  socket_.lower().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  socket_.lower().close(ec);
  want_write_.notify();
}

}  // namespace infermesh::proxy
