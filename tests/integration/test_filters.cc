// Filters that exist only to exercise the filter API end to end; linked
// into infermesh-proxy-test-filters, never into the shipped proxy.
#include <charconv>

#include "proxy/filter/filter.h"

namespace infermesh::testing {
namespace {

using filter::BodyChunk;
using filter::FilterStatus;
using filter::StreamContext;

// Rewrites an SSE stream event by event: each event gets a comment line
// ": event N" in front of it.
class SseRewrite final : public filter::StreamFilter {
 public:
  bool wantsResponseEvents() const override { return true; }
  FilterStatus onResponseHeaders(StreamContext&, filter::ResponseHead& head, bool) override {
    sse_ = head.headers.get("content-type").value_or("").starts_with("text/event-stream");
    if (sse_) head.content_length.reset();  // the body grows
    return FilterStatus::Continue;
  }
  FilterStatus onResponseBody(StreamContext&, BodyChunk& chunk, bool) override {
    if (!sse_ || chunk.empty()) return FilterStatus::Continue;
    std::string out;
    filter::forEachEvent(chunk.view(), false, [&](std::string_view event) {
      out += ": event " + std::to_string(++events_) + "\n";
      out.append(event);
      out += "\n\n";
    });
    chunk.replace(std::move(out));
    return FilterStatus::Continue;
  }

 private:
  bool sse_ = false;
  int events_ = 0;
};

// Holds the request head and the response head, each until a timer on the
// stream's worker fires; says so in a response header.
class Pause final : public filter::StreamFilter {
 public:
  explicit Pause(int ms) : ms_(ms) {}
  FilterStatus onRequestHeaders(StreamContext&, bool) override {
    callbacks_->startTimer(std::chrono::milliseconds(ms_), [this] {
      request_resumed_ = true;
      callbacks_->resume();
    });
    return FilterStatus::Stop;
  }
  FilterStatus onResponseHeaders(StreamContext&, filter::ResponseHead& head, bool) override {
    head_ = &head;
    callbacks_->startTimer(std::chrono::milliseconds(ms_), [this] {
      head_->headers.add("x-test-paused", request_resumed_ ? "request,response" : "response");
      callbacks_->resume();
    });
    return FilterStatus::Stop;
  }

 private:
  int ms_;
  bool request_resumed_ = false;
  filter::ResponseHead* head_ = nullptr;
};

// Adds a trailer naming the grpc-status it saw, and whether the body had
// ended (end_stream) before the trailers came.
class TrailerWitness final : public filter::StreamFilter {
 public:
  FilterStatus onResponseBody(StreamContext&, BodyChunk&, bool end_stream) override {
    body_ended_ = body_ended_ || end_stream;
    return FilterStatus::Continue;
  }
  FilterStatus onResponseTrailers(StreamContext&, filter::HeaderList& trailers) override {
    trailers.add("x-test-trailer",
                 "grpc-status=" + std::string(trailers.get("grpc-status").value_or("?")) + (body_ended_ ? ";ended" : ""));
    return FilterStatus::Continue;
  }

 private:
  bool body_ended_ = false;
};

template <typename F, typename... Args>
class Factory final : public filter::FilterFactory {
 public:
  explicit Factory(Args... args) : args_(args...) {}
  std::unique_ptr<filter::StreamFilter> create() const override {
    return std::apply([](auto... a) { return std::make_unique<F>(a...); }, args_);
  }

 private:
  std::tuple<Args...> args_;
};

const filter::Registration kSse{"test_sse_rewrite", [](std::string_view, std::string&) {
                                  return std::shared_ptr<const filter::FilterFactory>(std::make_shared<Factory<SseRewrite>>());
                                }};
const filter::Registration kPause{"test_pause", [](std::string_view json, std::string& error) {
                                    // {"ms": N}
                                    int ms = 50;
                                    if (auto at = json.find("\"ms\":"); at != std::string_view::npos) {
                                      const char* p = json.data() + at + 5;
                                      std::from_chars(p, json.data() + json.size(), ms);
                                    }
                                    if (ms <= 0) error = "ms: must be > 0";
                                    return ms <= 0 ? nullptr
                                                   : std::shared_ptr<const filter::FilterFactory>(
                                                         std::make_shared<Factory<Pause, int>>(ms));
                                  }};
const filter::Registration kTrailers{"test_trailers", [](std::string_view, std::string&) {
                                       return std::shared_ptr<const filter::FilterFactory>(
                                           std::make_shared<Factory<TrailerWitness>>());
                                     }};

}  // namespace
}  // namespace infermesh::testing
