#include "proxy/server/stream_driver.h"

#include <boost/asio/steady_timer.hpp>

#include <algorithm>

#include "proxy/config/snapshot.h"
#include "proxy/server/http_util.h"
#include "proxy/server/request_guard.h"
#include "proxy/server/worker.h"

namespace infermesh::proxy {

namespace asio = boost::asio;
using asio::awaitable;

namespace {

std::vector<std::unique_ptr<filter::StreamFilter>> makeChain(const filter::StreamContext& ctx) {
  std::vector<std::unique_ptr<filter::StreamFilter>> chain;
  chain.reserve(ctx.listener->filters.size());
  for (const auto& factory : ctx.listener->filters) chain.push_back(factory->create());
  return chain;
}

stats::AbortReason abortReason(std::string_view why) {
  using stats::AbortReason;
  return why == "upstream_reset_mid_stream"       ? AbortReason::Reset
         : why == "upstream_timeout_mid_stream"    ? AbortReason::IdleTimeout
         : why == "upstream_first_token_timeout"   ? AbortReason::FirstTokenTimeout
         : why == "upstream_request_timeout"       ? AbortReason::RequestTimeout
                                                   : AbortReason::Other;
}

}  // namespace

StreamDriver::StreamDriver(Worker& worker, filter::StreamContext& ctx, CodecStream& codec,
                           std::uint32_t listener_index)
    : worker_(worker),
      ctx_(ctx),
      codec_(codec),
      listener_index_(listener_index),
      filters_(ctx, makeChain(ctx), this),
      done_(worker.io().get_executor()),
      resumed_(worker.io().get_executor()) {
  ctx_.downstream = this;
  filters_.on_resume = [this](Progress p) {
    resumed_progress_ = p;
    resumed_.notify();
  };
}

StreamDriver::~StreamDriver() {
  if (alive_) *alive_ = false;
  for (auto& [id, timer] : timers_) timer->cancel();
}

awaitable<StreamDriver::Progress> StreamDriver::settle(Progress p) {
  // A filter holds the event; reading (from the client, or from upstream
  // for a response event) waits until it lets go.
  if (p == Progress::Stopped) {
    if (!cancelled_) co_await resumed_.wait();
    resumed_.reset();
    p = cancelled_ ? Progress::Stopped : resumed_progress_;
  }
  co_return p;
}

awaitable<StreamDriver::Progress> StreamDriver::resolveThenFilter() {
  // Target resolution reads the whole body first (bounded by the
  // listener's body limit, which the codec enforces).
  const bool had_body = codec_.bodyFollows();
  std::string body;
  if (had_body && codec_.continueExpected()) co_await codec_.beforeBody();
  for (bool more = had_body; more;) {
    std::string_view piece;
    const auto read = co_await codec_.readBody(piece);
    if (read == CodecStream::Read::Failed) co_return ctx_.local_reply ? Progress::LocalReply : Progress::Stopped;
    more = read == CodecStream::Read::More;
    ctx_.request_body_bytes += piece.size();  // the HTTP/2 codec's body limit counts it
    body.append(piece);
  }
  if (!ctx_.listener->access_log_format.body_keys.empty())
    config::readBodyFields(ctx_.listener->access_log_format, body, ctx_.log_body_values);
  // A request resolution refuses (no route, unknown model) still goes
  // through the listener's chain, so authn answers before a 404 says
  // anything about routes, and a filter may answer it (GET /v1/models);
  // if none does, the router answers with ctx.unresolved.
  if (!ctx_.listener->resolver->resolve(ctx_, body)) {
    ctx_.unresolved = std::move(ctx_.local_reply);
    ctx_.local_reply.reset();
    ctx_.reply_requested = false;
  }
  if (ctx_.route) filters_.applyRoute(ctx_.listener->filter_names, ctx_.route->filter_overrides);
  Progress progress = filters_.requestHeaders(!had_body);
  if (progress == Progress::Stopped) progress = co_await settle(progress);
  if (progress != Progress::Done || !had_body) co_return progress;
  filter::BodyChunk chunk;
  chunk.replace(std::move(body));
  progress = filters_.requestBody(chunk, true);
  if (progress == Progress::Stopped) progress = co_await settle(progress);
  co_return progress;
}

awaitable<StreamDriver::Progress> StreamDriver::streamThroughFilters() {
  bool more = codec_.bodyFollows();
  Progress progress = filters_.requestHeaders(!more);
  if (progress == Progress::Stopped) progress = co_await settle(progress);
  if (progress == Progress::Done && more && codec_.continueExpected()) co_await codec_.beforeBody();
  std::string_view buf;
  while (progress == Progress::Done && more) {
    const auto read = co_await codec_.readBody(buf);
    if (read == CodecStream::Read::Failed) {
      // Nobody to answer when the client left; else answer the codec's reply.
      co_return ctx_.local_reply ? Progress::LocalReply : Progress::Stopped;
    }
    more = read == CodecStream::Read::More;
    ctx_.request_body_bytes += buf.size();
    filter::BodyChunk chunk(buf);
    progress = filters_.requestBody(chunk, !more);
    if (progress == Progress::Stopped) progress = co_await settle(progress);
  }
  co_return progress;
}

awaitable<void> StreamDriver::run() {
  worker_.streamStarted();
  Progress progress = Progress::LocalReply;
  // A codec may refuse the request before any filter sees it (HTTP/2 header
  // limits); the guard may refuse it too.
  if (!ctx_.local_reply && guardRequest(ctx_, worker_.stats())) {
    if (ctx_.listener->resolver) {
      progress = co_await resolveThenFilter();
    } else {
      progress = co_await streamThroughFilters();
    }
  }
  if (progress == Progress::LocalReply) {
    co_await sendLocalReply();
  } else if (progress == Progress::Done) {
    // The terminal filter owns the response now. If the client leaves
    // first, its work is cancelled rather than left generating tokens
    // nobody will read.
    if (co_await codec_.waitWatchingClient(done_)) {
      ++worker_.stats().downstream_disconnects;
      ctx_.error_source = filter::ErrorSource::Downstream;
      ctx_.error_reason = "client_disconnected";
      cancel();
    }
    while (!done_.notified()) co_await done_.wait();
  }
  filters_.log();
  recordStreamEnd(worker_, ctx_, listener_index_);
  worker_.streamEnded();
}

awaitable<bool> StreamDriver::sendHeaders(filter::ResponseHead& head, bool end_stream,
                                          std::optional<std::uint64_t> content_length) {
  // Not a coroutine on the common path: the codec's write is awaited
  // directly, one coroutine frame per write instead of two.
  head.headers.set("x-request-id", ctx_.request_id);
  if (!bypass_response_filters_) {
    head.content_length = content_length;
    const Progress p = filters_.responseHeaders(head, end_stream);
    if (p != Progress::Done) return sendHeadersSlow(head, end_stream, p);
    content_length = head.content_length;
  }
  response_started_ = true;
  ctx_.response_status = head.status;
  return codec_.writeHead(head, end_stream, content_length);
}

awaitable<bool> StreamDriver::sendHeadersSlow(filter::ResponseHead& head, bool end_stream, Progress p) {
  p = co_await settle(p);
  if (p == Progress::LocalReply) {
    co_await replyFromResponseSide();
    co_return false;
  }
  if (p == Progress::Stopped) co_return false;  // the stream was reset meanwhile
  response_started_ = true;
  ctx_.response_status = head.status;
  co_return co_await codec_.writeHead(head, end_stream, head.content_length);
}

awaitable<bool> StreamDriver::writeOut(std::string_view bytes, bool end_stream) {
  if (!bytes.empty() && !ctx_.first_byte_at) ctx_.first_byte_at = std::chrono::steady_clock::now();
  ctx_.response_body_bytes += bytes.size();
  if (bytes.empty() && !end_stream) return nothingToWrite();
  return codec_.writeBody(bytes, end_stream);
}

awaitable<bool> StreamDriver::nothingToWrite() { co_return true; }

awaitable<bool> StreamDriver::sendBody(std::string_view bytes, bool end_stream) {
  if (bypass_response_filters_) return writeOut(bytes, end_stream);
  if (ended_early_) return endEarly({});
  filter::BodyChunk chunk(bytes);
  const Progress p = filters_.responseBody(chunk, end_stream);
  if (filters_.responseEnded() && p == Progress::Done) {
    ended_early_ = true;
    return endEarly(chunk.owned() ? std::string_view(early_tail_ = std::move(chunk.edit())) : chunk.view());
  }
  // The chunk's bytes must outlive the write: a view of the caller's or the
  // manager's bytes does; a chunk a filter edited lives here, so that write
  // waits in a coroutine of its own.
  if (p == Progress::Done && !chunk.owned()) return writeOut(chunk.view(), end_stream);
  return sendBodySlow(std::move(chunk), end_stream, p);
}

awaitable<bool> StreamDriver::endEarly(std::string_view bytes) {
  // Written once with end_stream; afterwards the terminal filter is told
  // the client wants nothing more, so it stops reading the upstream (the
  // model stops generating) without counting an error.
  if (!early_written_) {
    early_written_ = true;
    co_await writeOut(bytes, true);
    cancel();
  }
  co_return false;
}

awaitable<bool> StreamDriver::sendBodySlow(filter::BodyChunk chunk, bool end_stream, Progress p) {
  const bool held = p == Progress::Stopped;
  p = co_await settle(p);
  if (p != Progress::Done) {
    // Too late for another answer: the client sees the response fail.
    abort();
    co_return false;
  }
  co_return co_await writeOut((held ? filters_.pendingChunk() : chunk).view(), end_stream);
}

awaitable<bool> StreamDriver::sendTrailers(filter::HeaderList& trailers) {
  if (ended_early_) co_return false;
  if (!bypass_response_filters_) {
    // Every filter sees the body end before the trailers.
    filter::BodyChunk tail;
    Progress p = filters_.responseBody(tail, true);
    const bool held = p == Progress::Stopped;
    p = co_await settle(p);
    if (p != Progress::Done) {
      abort();
      co_return false;
    }
    const std::string_view rest = (held ? filters_.pendingChunk() : tail).view();
    if (!rest.empty() && !co_await writeOut(rest, false)) co_return false;
    p = co_await settle(filters_.responseTrailers(trailers));
    if (p != Progress::Done) {
      abort();
      co_return false;
    }
  }
  co_return co_await codec_.writeTrailers(trailers);
}

awaitable<void> StreamDriver::sendLocalReply() {
  if (response_started_) {
    abort();
    co_return;
  }
  co_await writeLocalReply(*this, ctx_);
}

awaitable<void> StreamDriver::replyFromResponseSide() {
  // The reply's own head and body skip the response filters: one of them
  // produced it, and running them again could answer again.
  bypass_response_filters_ = true;
  co_await writeLocalReply(*this, ctx_);
}

void StreamDriver::abort() {
  if (aborted_) return;
  aborted_ = true;
  worker_.stats().count(abortReason(ctx_.error_reason));
  codec_.abortResponse();
}

std::uint64_t StreamDriver::startTimer(std::chrono::milliseconds delay, std::function<void()> fn) {
  if (!alive_) alive_ = std::make_shared<bool>(true);
  auto timer = std::make_shared<asio::steady_timer>(worker_.io(), delay);
  const std::uint64_t id = ++last_timer_;
  timers_.emplace_back(id, timer);
  timer->async_wait([this, alive = alive_, id, fn = std::move(fn)](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    cancelTimer(id);
    fn();
  });
  return id;
}

std::function<void(std::function<void()>)> StreamDriver::dispatcher() {
  if (!alive_) alive_ = std::make_shared<bool>(true);
  return [worker = &worker_, alive = alive_](std::function<void()> fn) {
    worker->post([alive, fn = std::move(fn)] {
      if (*alive) fn();
    });
  };
}

void StreamDriver::cancelTimer(std::uint64_t id) {
  auto it = std::find_if(timers_.begin(), timers_.end(), [id](const auto& t) { return t.first == id; });
  if (it == timers_.end()) return;
  it->second->cancel();
  timers_.erase(it);
}

void StreamDriver::cancel() {
  cancelled_ = true;
  ctx_.cancel();
  // A held event will not be resumed by anyone now.
  resumed_.notify();
}

void StreamDriver::resetStream() {
  if (ctx_.error_reason.empty()) ctx_.error_reason = "reset_by_filter";
  ctx_.error_source = filter::ErrorSource::Internal;
  cancel();
  abort();
  done_.notify();
}

}  // namespace infermesh::proxy
