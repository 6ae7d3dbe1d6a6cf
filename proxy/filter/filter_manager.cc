#include "proxy/filter/filter_manager.h"

#include "proxy/filter/identity.h"
#include "proxy/filter/model_signals.h"

#include <algorithm>
#include <atomic>

namespace infermesh::filter {

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  // ASCII only, as HTTP field names are; no locale lookups on the hot path.
  auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; };
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i] && lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::optional<std::string_view> HeaderList::get(std::string_view name) const {
  for (const auto& [n, v] : fields_)
    if (equalsIgnoreCase(n, name)) return std::string_view(v);
  return std::nullopt;
}

void HeaderList::set(std::string_view name, std::string value) {
  remove(name);
  fields_.emplace_back(std::string(name), std::move(value));
}

void HeaderList::remove(std::string_view name) {
  std::erase_if(fields_, [&](const auto& f) { return equalsIgnoreCase(f.first, name); });
}

namespace detail {
std::uint32_t nextStateIndex() {
  static std::atomic<std::uint32_t> next{0};
  return next++;
}
}  // namespace detail

FilterRegistry& FilterRegistry::instance() {
  static FilterRegistry registry;
  return registry;
}

void FilterRegistry::add(std::string name, FilterFactoryBuilder builder) {
  builders_.emplace_back(std::move(name), std::move(builder));
}

const StateKey<Identity> kIdentity;
const std::uint32_t kModelSignalsSlot = nextRuntimeSlot();

const char* methodName(Identity::Method m) {
  switch (m) {
    case Identity::Method::ApiKey: return "api_key";
    case Identity::Method::Jwt: return "jwt";
    case Identity::Method::Mtls: return "mtls";
    case Identity::Method::None: break;
  }
  return "none";
}

std::uint32_t nextRuntimeSlot() {
  static std::atomic<std::uint32_t> next{0};
  return next++;
}

bool FilterRegistry::prepare(const config::Snapshot& snapshot, std::string& error) const {
  for (const auto& p : preparers_)
    if (!p.prepare(snapshot, error)) return false;
  return true;
}

const FilterFactoryBuilder* FilterRegistry::find(std::string_view name) const {
  for (const auto& [n, b] : builders_)
    if (n == name) return &b;
  return nullptr;
}

std::string FilterRegistry::names() const {
  std::vector<std::string_view> sorted;
  for (const auto& [n, b] : builders_) sorted.push_back(n);
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  for (auto n : sorted) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

namespace {

// Where the whole events in `s` end (0 when none is complete).
std::size_t eventsEnd(std::string_view s, bool ndjson) {
  if (ndjson) {
    const auto nl = s.rfind('\n');
    return nl == std::string_view::npos ? 0 : nl + 1;
  }
  const auto lf = s.rfind("\n\n");
  const auto crlf = s.rfind("\r\n\r\n");
  std::size_t end = 0;
  if (lf != std::string_view::npos) end = lf + 2;
  if (crlf != std::string_view::npos) end = std::max(end, crlf + 4);
  return end;
}

}  // namespace

void forEachEvent(std::string_view chunk, bool ndjson, const std::function<void(std::string_view)>& fn) {
  while (!chunk.empty()) {
    std::size_t end, skip;
    if (ndjson) {
      end = chunk.find('\n');
      skip = 1;
    } else {
      const auto lf = chunk.find("\n\n");
      const auto crlf = chunk.find("\r\n\r\n");
      end = std::min(lf, crlf);
      skip = end == lf ? 2 : 4;
    }
    if (end == std::string_view::npos) {
      fn(chunk);  // an unterminated last event (the stream ended mid-event)
      return;
    }
    if (end > 0) fn(chunk.substr(0, end));
    chunk.remove_prefix(end + skip);
  }
}

FilterManager::FilterManager(StreamContext& ctx, std::vector<std::unique_ptr<StreamFilter>> filters,
                             StreamServices* services)
    : ctx_(ctx), filters_(std::move(filters)), services_(services) {
  for (auto& f : filters_) {
    f->setCallbacks(*this);
    noteWants(*f);
  }
}

void FilterManager::noteWants(const StreamFilter& f) {
  // Usage is read from whole events, so wanting it frames the stream too.
  if (f.wantsUsage() && !usage_) usage_ = std::make_unique<UsageExtractor>();
  frame_events_ = frame_events_ || f.wantsResponseEvents() || f.wantsUsage();
}

void FilterManager::applyRoute(const std::vector<std::string>& names,
                               const std::vector<RouteFilterOverride>& overrides) {
  if (overrides.empty()) return;
  std::vector<std::unique_ptr<StreamFilter>> chain;
  chain.reserve(filters_.size());
  frame_events_ = false;
  usage_.reset();
  for (std::size_t i = 0; i < filters_.size(); ++i) {
    const RouteFilterOverride* o = nullptr;
    for (const auto& candidate : overrides)
      if (i < names.size() && candidate.name == names[i]) o = &candidate;
    if (o != nullptr && o->disabled) continue;
    auto f = o != nullptr ? o->factory->create() : std::move(filters_[i]);
    f->setCallbacks(*this);
    noteWants(*f);
    chain.push_back(std::move(f));
  }
  filters_ = std::move(chain);
}

FilterStatus FilterManager::call(StreamFilter& f) {
  switch (pending_) {
    case Event::RequestHeaders: return f.onRequestHeaders(ctx_, end_stream_);
    case Event::RequestBody: return f.onRequestBody(ctx_, *chunk_, end_stream_);
    case Event::RequestTrailers: return f.onRequestTrailers(ctx_, *trailers_);
    case Event::ResponseHeaders: return f.onResponseHeaders(ctx_, *head_, end_stream_);
    case Event::ResponseBody: return f.onResponseBody(ctx_, *chunk_, end_stream_);
    case Event::ResponseTrailers: return f.onResponseTrailers(ctx_, *trailers_);
    case Event::None: break;
  }
  return FilterStatus::Continue;
}

FilterManager::Progress FilterManager::iterate(std::size_t from) {
  const std::size_t n = filters_.size();
  const bool body = pending_ == Event::RequestBody || pending_ == Event::ResponseBody;
  for (std::size_t pos = from; pos < n; ++pos) {
    const std::size_t i = responseSide() ? n - 1 - pos : pos;
    // Data a filter kept comes back to it, ahead of the new bytes.
    if (body && !buffered_.empty() && !buffered_[i].empty()) {
      buffered_[i].append(chunk_->view());
      chunk_->replace(std::move(buffered_[i]));
      buffered_[i].clear();
    }
    ctx_.reply_requested = false;
    const FilterStatus s = call(*filters_[i]);
    if (ctx_.reply_requested) {
      ctx_.reply_requested = false;
      pending_ = Event::None;
      return Progress::LocalReply;
    }
    if (s == FilterStatus::Continue) continue;
    if (s == FilterStatus::StopAndBuffer && body && !end_stream_) {
      if (buffered_.empty()) buffered_.resize(n);
      if (buffered_[i].size() + chunk_->size() > kMaxBufferedBody) {
        if (responseSide())
          ctx_.sendLocalReply(500, "a filter buffered more response body than it may", "internal_error",
                              "response_buffer_exceeded");
        else
          ctx_.sendLocalReply(413, "request body exceeds what a filter may buffer", "invalid_request_error",
                              "request_too_large");
        pending_ = Event::None;
        return Progress::LocalReply;
      }
      // The chunk already holds what was kept before (see above): take it
      // back without copying when it is the manager's own.
      if (chunk_->owned()) buffered_[i] = std::move(chunk_->edit());
      else buffered_[i].assign(chunk_->view());
      chunk_->reset({});  // nothing passes on until the filter continues
      pending_ = Event::None;
      return Progress::Done;
    }
    // Stop (or StopAndBuffer where nothing more will come).
    stopped_at_ = pos;
    // Only a held chunk is copied; the common path passes views through.
    if (body && chunk_ != &held_) {
      held_.replace(std::string(chunk_->view()));
      chunk_ = &held_;
    }
    return Progress::Stopped;
  }
  pending_ = Event::None;
  return Progress::Done;
}

FilterManager::Progress FilterManager::start(Event e, bool end_stream, BodyChunk* chunk) {
  pending_ = e;
  end_stream_ = end_stream;
  chunk_ = chunk;
  return iterate(0);
}

FilterManager::Progress FilterManager::requestHeaders(bool end_stream) {
  return start(Event::RequestHeaders, end_stream, nullptr);
}

FilterManager::Progress FilterManager::requestBody(BodyChunk& chunk, bool end_stream) {
  return start(Event::RequestBody, end_stream, &chunk);
}

FilterManager::Progress FilterManager::requestTrailers(HeaderList& trailers) {
  trailers_ = &trailers;
  return start(Event::RequestTrailers, true, nullptr);
}

FilterManager::Progress FilterManager::responseHeaders(ResponseHead& head, bool end_stream) {
  head_ = &head;
  if (frame_events_) {
    const std::string_view type = head.headers.get("content-type").value_or("");
    ndjson_ = type.starts_with("application/x-ndjson") || type.starts_with("application/jsonl") ||
              type.starts_with("application/ndjson");
    framing_ = ndjson_ || type.starts_with("text/event-stream");
  }
  if (usage_) usage_->onHeaders(head);
  return start(Event::ResponseHeaders, end_stream, nullptr);
}

void FilterManager::frameEvents(BodyChunk& chunk, bool end_stream) {
  if (frame_rest_.empty()) {
    const std::string_view in = chunk.view();
    const std::size_t cut = end_stream ? in.size() : eventsEnd(in, ndjson_);
    if (cut == in.size()) return;
    frame_rest_.assign(in.substr(cut));
    if (chunk.owned()) chunk.edit().resize(cut);
    else chunk.reset(in.substr(0, cut));
    return;
  }
  frame_rest_.append(chunk.view());
  const std::size_t cut = end_stream ? frame_rest_.size() : eventsEnd(frame_rest_, ndjson_);
  frame_chunk_.assign(frame_rest_, 0, cut);
  frame_rest_.erase(0, cut);
  chunk.reset(frame_chunk_);
}

FilterManager::Progress FilterManager::responseBody(BodyChunk& chunk, bool end_stream) {
  if (framing_) {
    frameEvents(chunk, end_stream);
    if (chunk.empty() && !end_stream) return Progress::Done;  // no whole event yet
  }
  if (usage_) usage_->onBody(chunk.view(), end_stream, ctx_.usage);
  return start(Event::ResponseBody, end_stream, &chunk);
}

FilterManager::Progress FilterManager::responseTrailers(HeaderList& trailers) {
  trailers_ = &trailers;
  return start(Event::ResponseTrailers, true, nullptr);
}

void FilterManager::resume() {
  if (pending_ == Event::None) return;  // nothing held (a late or double resume)
  // A filter may answer instead of resuming (it sends the reply, then resumes).
  Progress p = ctx_.reply_requested ? (ctx_.reply_requested = false, pending_ = Event::None, Progress::LocalReply)
                                    : iterate(stopped_at_ + 1);
  if (p != Progress::Stopped && on_resume) on_resume(p);
}

std::uint64_t FilterManager::startTimer(std::chrono::milliseconds delay, std::function<void()> fn) {
  return services_ ? services_->startTimer(delay, std::move(fn)) : 0;
}

void FilterManager::cancelTimer(std::uint64_t id) {
  if (services_) services_->cancelTimer(id);
}

void FilterManager::resetStream() {
  if (services_) services_->resetStream();
}

void FilterManager::endResponse() {
  if (pending_ != Event::ResponseBody) return;
  response_ended_ = true;
  end_stream_ = true;
}

std::function<void(std::function<void()>)> FilterManager::dispatcher() {
  return services_ ? services_->dispatcher() : std::function<void(std::function<void()>)>();
}

void FilterManager::complete() {
  if (completed_) return;
  completed_ = true;
  for (auto& f : filters_) f->onComplete(ctx_);
}

void FilterManager::log() {
  complete();
  if (logged_) return;
  logged_ = true;
  for (auto& f : filters_) f->onLog(ctx_);
}

}  // namespace infermesh::filter
