#include "proxy/server/upstream_h2.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <nghttp2/nghttp2.h>

#include <array>
#include <cstring>

namespace infermesh::proxy {

namespace asio = boost::asio;
using asio::awaitable;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

namespace {
constexpr std::uint32_t kStreamWindow = 256 * 1024;
constexpr std::int32_t kConnectionWindow = 16 * 1024 * 1024;
constexpr auto kIdleClose = std::chrono::seconds(60);
}  // namespace

void UpstreamH2Stream::cancel() {
  if (auto s = session.lock()) s->cancel(id);
}

struct UpstreamH2Session::Callbacks {
  static UpstreamH2Stream* stream(nghttp2_session* session, std::int32_t id) {
    return static_cast<UpstreamH2Stream*>(nghttp2_session_get_stream_user_data(session, id));
  }

  static int onHeader(nghttp2_session* session, const nghttp2_frame* frame, const std::uint8_t* name,
                      std::size_t namelen, const std::uint8_t* value, std::size_t valuelen, std::uint8_t, void*) {
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    auto* s = stream(session, frame->hd.stream_id);
    if (s == nullptr) return 0;
    std::string n(reinterpret_cast<const char*>(name), namelen);
    std::string v(reinterpret_cast<const char*>(value), valuelen);
    if (n == ":status") {
      s->status = static_cast<unsigned>(std::atoi(v.c_str()));
      return 0;
    }
    (s->headers_done ? s->trailers : s->headers).emplace_back(std::move(n), std::move(v));
    return 0;
  }

  static int onFrameRecv(nghttp2_session* session, const nghttp2_frame* frame, void* user) {
    auto& self = *static_cast<UpstreamH2Session*>(user);
    if (frame->hd.type == NGHTTP2_GOAWAY) {
      self.goaway_ = true;
      return 0;
    }
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
      self.peer_max_streams_ =
          nghttp2_session_get_remote_settings(session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
      self.ready_ = true;
      self.ready_signal_.notify();
      return 0;
    }
    auto* s = frame->hd.stream_id ? stream(session, frame->hd.stream_id) : nullptr;
    if (s == nullptr) return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && !s->headers_done) {
      if (s->status >= 100 && s->status < 200) {  // interim response: wait for the real one
        s->status = 0;
        s->headers.clear();
      } else {
        s->headers_done = true;
      }
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
      s->ended = true;
    s->changed.notify();
    return 0;
  }

  static int onData(nghttp2_session* session, std::uint8_t, std::int32_t id, const std::uint8_t* data, std::size_t len,
                    void*) {
    auto* s = stream(session, id);
    if (s == nullptr) return 0;
    s->data.append(reinterpret_cast<const char*>(data), len);
    s->changed.notify();
    return 0;
  }

  static int onStreamClose(nghttp2_session*, std::int32_t id, std::uint32_t error_code, void* user) {
    auto& self = *static_cast<UpstreamH2Session*>(user);
    auto it = self.streams_.find(id);
    if (it == self.streams_.end()) return 0;
    auto& s = *it->second;
    if (!s.ended) {
      s.reset = true;
      s.error_code = error_code;
    }
    s.changed.notify();
    self.streams_.erase(it);
    return 0;
  }

  static ssize_t readBody(nghttp2_session* session, std::int32_t id, std::uint8_t* buf, std::size_t length,
                          std::uint32_t* flags, nghttp2_data_source*, void*) {
    auto* s = stream(session, id);
    if (s == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    const std::size_t n = std::min(length, s->body.size() - s->body_sent);
    std::memcpy(buf, s->body.data() + s->body_sent, n);
    s->body_sent += n;
    if (s->body_sent == s->body.size()) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      s->body.clear();
      s->body.shrink_to_fit();
    }
    return static_cast<ssize_t>(n);
  }
};

UpstreamH2Session::UpstreamH2Session(UpstreamStream stream)
    : stream_(std::move(stream)), want_write_(stream_.get_executor()), ready_signal_(stream_.get_executor()) {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &Callbacks::onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Callbacks::onFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Callbacks::onData);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Callbacks::onStreamClose);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  // Windows open only as the router forwards what it took (backpressure
  // from the client reaches the model server).
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  nghttp2_session_client_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
}

UpstreamH2Session::~UpstreamH2Session() { nghttp2_session_del(session_); }

void UpstreamH2Session::start() {
  open_ = true;
  auto self = shared_from_this();
  asio::co_spawn(stream_.get_executor(), [self]() -> awaitable<void> {
    using namespace asio::experimental::awaitable_operators;
    co_await (self->readLoop() || self->writeLoop());
    self->fail();
  }, asio::detached);
}

awaitable<bool> UpstreamH2Session::waitReady(std::chrono::steady_clock::duration limit) {
  if (ready_ || !open_) co_return ready_;
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(stream_.get_executor());
  timer.expires_after(limit);
  co_await (ready_signal_.wait() || timer.async_wait(kTuple));
  co_return ready_ && open_;
}

bool UpstreamH2Session::acceptsStreams() const {
  return open_ && ready_ && !goaway_ && streams_.size() < peer_max_streams_ &&
         nghttp2_session_get_next_stream_id(session_) < (1u << 30);
}

std::shared_ptr<UpstreamH2Stream> UpstreamH2Session::open(const HeaderPairs& headers, std::string body) {
  if (!acceptsStreams()) return nullptr;
  auto s = std::make_shared<UpstreamH2Stream>(stream_.get_executor());
  s->body = std::move(body);
  s->session = weak_from_this();
  std::vector<nghttp2_nv> nva;
  nva.reserve(headers.size());
  for (const auto& [n, v] : headers)
    nva.push_back(nghttp2_nv{reinterpret_cast<std::uint8_t*>(const_cast<char*>(n.data())),
                             reinterpret_cast<std::uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
                             NGHTTP2_NV_FLAG_NONE});
  nghttp2_data_provider provider{};
  provider.read_callback = &Callbacks::readBody;
  const std::int32_t id = nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(),
                                                 s->body.empty() ? nullptr : &provider, s.get());
  if (id < 0) return nullptr;
  s->id = id;
  streams_[id] = s;
  want_write_.notify();
  return s;
}

void UpstreamH2Session::consumed(std::int32_t id, std::size_t n) {
  if (!open_) return;
  nghttp2_session_consume(session_, id, n);
  want_write_.notify();
}

void UpstreamH2Session::cancel(std::int32_t id) {
  if (!open_ || !streams_.contains(id)) return;
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  want_write_.notify();
}

void UpstreamH2Session::close() {
  stream_.lower().close();
  want_write_.notify();
}

void UpstreamH2Session::fail() {
  open_ = false;
  ready_signal_.notify();
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [id, s] : streams) {
    if (!s->ended) s->reset = true;
    s->changed.notify();
  }
  stream_.lower().close();
}

awaitable<void> UpstreamH2Session::readLoop() {
  std::array<std::uint8_t, 16 * 1024> buf;
  asio::steady_timer idle(stream_.get_executor());
  for (;;) {
    using namespace asio::experimental::awaitable_operators;
    std::size_t n = 0;
    boost::system::error_code ec;
    if (streams_.empty()) {
      // An idle connection is kept for a while, then closed.
      idle.expires_after(kIdleClose);
      auto r = co_await (stream_.async_read_some(asio::buffer(buf), kTuple) || idle.async_wait(kTuple));
      if (r.index() == 1) co_return;
      std::tie(ec, n) = std::get<0>(r);
    } else {
      std::tie(ec, n) = co_await stream_.async_read_some(asio::buffer(buf), kTuple);
    }
    if (ec) co_return;
    if (nghttp2_session_mem_recv(session_, buf.data(), n) < 0) co_return;
    want_write_.notify();
    if (goaway_ && streams_.empty()) co_return;
  }
}

awaitable<void> UpstreamH2Session::writeLoop() {
  std::string pending;
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
      auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(pending), kTuple);
      if (ec) co_return;
      pending.clear();
      continue;
    }
    if (!stream_.lower().socket().is_open()) co_return;
    want_write_.reset();
    co_await want_write_.wait();
  }
}

std::shared_ptr<UpstreamH2Session> UpstreamH2Pool::find(std::uint64_t key) {
  auto it = sessions_.find(key);
  if (it == sessions_.end()) return nullptr;
  auto& list = it->second;
  std::erase_if(list, [](const auto& s) { return !s->alive(); });
  for (auto& s : list)
    if (s->acceptsStreams()) return s;
  return nullptr;
}

void UpstreamH2Pool::clear() {
  for (auto& [key, list] : sessions_)
    for (auto& s : list) s->close();
  sessions_.clear();
}

}  // namespace infermesh::proxy
