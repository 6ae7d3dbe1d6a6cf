#include "proxy/filter/filter_manager.h"

#include <algorithm>

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

FilterRegistry& FilterRegistry::instance() {
  static FilterRegistry registry;
  return registry;
}

void FilterRegistry::add(std::string name, FilterFactoryBuilder builder) {
  builders_.emplace_back(std::move(name), std::move(builder));
}

const FilterFactoryBuilder* FilterRegistry::find(std::string_view name) const {
  for (const auto& [n, b] : builders_)
    if (n == name) return &b;
  return nullptr;
}

FilterManager::FilterManager(StreamContext& ctx, std::vector<std::unique_ptr<StreamFilter>> filters)
    : ctx_(ctx), filters_(std::move(filters)) {
  for (auto& f : filters_) f->setCallbacks(*this);
}

FilterManager::Progress FilterManager::iterate(std::size_t from) {
  for (std::size_t i = from; i < filters_.size(); ++i) {
    StreamFilter& f = *filters_[i];
    FilterStatus s = pending_ == Event::Headers ? f.onRequestHeaders(ctx_, end_stream_)
                                                : f.onRequestBody(ctx_, chunk_, end_stream_);
    if (ctx_.local_reply) {
      pending_ = Event::None;
      return Progress::LocalReply;
    }
    if (s == FilterStatus::Stop) {
      stopped_at_ = i;
      // Only a held chunk is copied; the common path passes views through.
      if (pending_ == Event::Body && chunk_.data() != pending_chunk_.data()) {
        pending_chunk_.assign(chunk_);
        chunk_ = pending_chunk_;
      }
      return Progress::Stopped;
    }
  }
  pending_ = Event::None;
  return Progress::Done;
}

FilterManager::Progress FilterManager::requestHeaders(bool end_stream) {
  pending_ = Event::Headers;
  end_stream_ = end_stream;
  chunk_ = {};
  return iterate(0);
}

FilterManager::Progress FilterManager::requestBody(std::string_view chunk, bool end_stream) {
  pending_ = Event::Body;
  end_stream_ = end_stream;
  chunk_ = chunk;
  return iterate(0);
}

void FilterManager::resume() {
  if (pending_ == Event::None) return;  // nothing held (a late or double resume)
  Progress p = ctx_.local_reply ? (pending_ = Event::None, Progress::LocalReply) : iterate(stopped_at_ + 1);
  if (p != Progress::Stopped && on_resume) on_resume(p);
}

void FilterManager::responseHeaders(ResponseHead& head) {
  for (auto it = filters_.rbegin(); it != filters_.rend(); ++it) (*it)->onResponseHeaders(ctx_, head);
}

void FilterManager::responseBody(std::string_view chunk, bool end_stream) {
  for (auto it = filters_.rbegin(); it != filters_.rend(); ++it) (*it)->onResponseBody(ctx_, chunk, end_stream);
}

void FilterManager::log() {
  for (auto& f : filters_) f->onLog(ctx_);
}

}  // namespace infermesh::filter
