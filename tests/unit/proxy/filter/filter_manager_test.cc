#include "proxy/filter/filter_manager.h"

#include <gtest/gtest.h>

namespace infermesh::filter {
namespace {

// Records what it saw; can stop or answer on a given phase.
class Probe : public StreamFilter {
 public:
  Probe(std::string name, std::vector<std::string>& log) : name_(std::move(name)), log_(log) {}
  FilterStatus onRequestHeaders(StreamContext& ctx, bool end) override {
    log_.push_back(name_ + ":headers");
    if (reply_on_headers) ctx.sendLocalReply(429, "slow down", "rate_limit_error", "rate_limited");
    return stop_on_headers || reply_on_headers ? FilterStatus::Stop : FilterStatus::Continue;
  }
  FilterStatus onRequestBody(StreamContext&, BodyChunk& chunk, bool end) override {
    log_.push_back(name_ + ":body:" + std::string(chunk.view()) + (end ? ":end" : ""));
    if (buffer_request && !end) return FilterStatus::StopAndBuffer;
    return stop_on_body ? FilterStatus::Stop : FilterStatus::Continue;
  }
  FilterStatus onResponseHeaders(StreamContext&, ResponseHead& head, bool end) override {
    log_.push_back(name_ + ":response" + (end ? ":end" : ""));
    head.headers.add("x-" + name_, "1");
    return stop_on_response ? FilterStatus::Stop : FilterStatus::Continue;
  }
  FilterStatus onResponseBody(StreamContext&, BodyChunk& chunk, bool end) override {
    log_.push_back(name_ + ":rbody:" + std::string(chunk.view()) + (end ? ":end" : ""));
    if (upper_response) for (auto& ch : chunk.edit()) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    if (buffer_response && !end) return FilterStatus::StopAndBuffer;
    if (end_response_at > 0 && ++response_events == end_response_at) {
      chunk.edit() += "data: bye\n\n";
      callbacks_->endResponse();
    }
    return FilterStatus::Continue;
  }
  FilterStatus onResponseTrailers(StreamContext&, HeaderList& trailers) override {
    log_.push_back(name_ + ":trailers");
    trailers.add("x-" + name_ + "-trailer", "1");
    return FilterStatus::Continue;
  }
  bool wantsResponseEvents() const override { return events; }
  bool wantsUsage() const override { return usage; }
  void onComplete(StreamContext&) override { log_.push_back(name_ + ":complete"); }
  void onLog(const StreamContext&) override { log_.push_back(name_ + ":log"); }
  void resumeNow() { callbacks_->resume(); }

  bool stop_on_headers = false;
  bool stop_on_body = false;
  bool reply_on_headers = false;
  bool buffer_request = false;
  bool buffer_response = false;
  bool upper_response = false;
  bool stop_on_response = false;
  bool events = false;
  bool usage = false;
  int end_response_at = 0;  // ends the response at this body event
  int response_events = 0;

 private:
  std::string name_;
  std::vector<std::string>& log_;
};

struct Chain {
  std::vector<std::string> log;
  StreamContext ctx;
  Probe* a;
  Probe* b;
  std::unique_ptr<FilterManager> fm;
  std::vector<FilterManager::Progress> resumed;
  explicit Chain(bool events_on_a = false, bool usage_on_b = false) {
    auto pa = std::make_unique<Probe>("a", log);
    auto pb = std::make_unique<Probe>("b", log);
    a = pa.get();
    b = pb.get();
    a->events = events_on_a;
    b->usage = usage_on_b;
    std::vector<std::unique_ptr<StreamFilter>> v;
    v.push_back(std::move(pa));
    v.push_back(std::move(pb));
    fm = std::make_unique<FilterManager>(ctx, std::move(v));
    fm->on_resume = [this](FilterManager::Progress p) { resumed.push_back(p); };
  }
  // A response body event; what the chain passes on.
  std::string respond(std::string_view bytes, bool end) {
    BodyChunk chunk(bytes);
    EXPECT_EQ(fm->responseBody(chunk, end), FilterManager::Progress::Done);
    return std::string(chunk.view());
  }
};

using Log = std::vector<std::string>;

TEST(FilterManager, RunsRequestPhasesInOrderAndResponseInReverse) {
  Chain c;
  EXPECT_EQ(c.fm->requestHeaders(false), FilterManager::Progress::Done);
  EXPECT_EQ(c.fm->requestBody("xy", true), FilterManager::Progress::Done);
  ResponseHead head;
  EXPECT_EQ(c.fm->responseHeaders(head, true), FilterManager::Progress::Done);
  c.fm->log();
  c.fm->log();  // once only
  EXPECT_EQ(c.log, (Log{"a:headers", "b:headers", "a:body:xy:end", "b:body:xy:end", "b:response:end",
                        "a:response:end", "a:complete", "b:complete", "a:log", "b:log"}));
  EXPECT_TRUE(head.headers.get("x-a"));
}

TEST(FilterManager, StopHoldsTheEventUntilResume) {
  Chain c;
  c.a->stop_on_headers = true;
  EXPECT_EQ(c.fm->requestHeaders(true), FilterManager::Progress::Stopped);
  EXPECT_EQ(c.log, (Log{"a:headers"}));
  c.a->resumeNow();
  EXPECT_EQ(c.log, (Log{"a:headers", "b:headers"}));
  ASSERT_EQ(c.resumed.size(), 1u);
  EXPECT_EQ(c.resumed[0], FilterManager::Progress::Done);
  c.a->resumeNow();  // a second resume is harmless
  EXPECT_EQ(c.resumed.size(), 1u);
}

TEST(FilterManager, StoppedBodyChunkIsKeptForTheNextFilter) {
  Chain c;
  c.a->stop_on_body = true;
  EXPECT_EQ(c.fm->requestHeaders(false), FilterManager::Progress::Done);
  {
    std::string transient = "chunk";
    EXPECT_EQ(c.fm->requestBody(transient, true), FilterManager::Progress::Stopped);
    transient.assign("XXXXX");  // the caller's buffer is reused
  }
  c.a->resumeNow();
  EXPECT_EQ(c.log.back(), "b:body:chunk:end");
}

TEST(FilterManager, LocalReplyStopsTheChain) {
  Chain c;
  c.a->reply_on_headers = true;
  EXPECT_EQ(c.fm->requestHeaders(true), FilterManager::Progress::LocalReply);
  EXPECT_EQ(c.log, (Log{"a:headers"}));
  ASSERT_TRUE(c.ctx.local_reply);
  EXPECT_EQ(c.ctx.local_reply->status, 429u);
}

TEST(FilterManager, LocalReplyAfterStop) {
  Chain c;
  c.a->stop_on_headers = true;
  EXPECT_EQ(c.fm->requestHeaders(true), FilterManager::Progress::Stopped);
  c.ctx.sendLocalReply(403, "denied", "permission_error", "forbidden");
  c.a->resumeNow();
  ASSERT_EQ(c.resumed.size(), 1u);
  EXPECT_EQ(c.resumed[0], FilterManager::Progress::LocalReply);
  EXPECT_EQ(c.log, (Log{"a:headers"}));  // b never saw the request
}

TEST(FilterManager, StopAndBufferGivesTheKeptBytesBackWithTheNext) {
  Chain c;
  c.a->buffer_request = true;
  EXPECT_EQ(c.fm->requestHeaders(false), FilterManager::Progress::Done);
  BodyChunk first("ab");
  EXPECT_EQ(c.fm->requestBody(first, false), FilterManager::Progress::Done);
  EXPECT_TRUE(first.empty());  // nothing passed on yet
  EXPECT_EQ(c.fm->requestBody("cd", false), FilterManager::Progress::Done);
  BodyChunk last("ef");
  EXPECT_EQ(c.fm->requestBody(last, true), FilterManager::Progress::Done);
  EXPECT_EQ(last.view(), "abcdef");
  EXPECT_EQ(c.log, (Log{"a:headers", "b:headers", "a:body:ab", "a:body:abcd", "a:body:abcdef:end",
                        "b:body:abcdef:end"}));
}

TEST(FilterManager, BufferingIsBounded) {
  Chain c;
  c.a->buffer_request = true;
  c.fm->requestHeaders(false);
  const std::string mib(1024 * 1024, 'x');
  FilterManager::Progress p = FilterManager::Progress::Done;
  for (int i = 0; i < 9 && p == FilterManager::Progress::Done; ++i) p = c.fm->requestBody(mib, false);
  EXPECT_EQ(p, FilterManager::Progress::LocalReply);
  EXPECT_EQ(c.ctx.local_reply->status, 413u);
}

TEST(FilterManager, ResponseFiltersEditStopAndResume) {
  Chain c;
  c.b->upper_response = true;  // runs first on the way out
  ResponseHead head;
  c.a->stop_on_response = true;
  EXPECT_EQ(c.fm->responseHeaders(head, false), FilterManager::Progress::Stopped);
  c.a->resumeNow();
  ASSERT_EQ(c.resumed.size(), 1u);
  EXPECT_EQ(c.respond("hello", false), "HELLO");
  // A response filter keeps data until the end.
  c.a->buffer_response = true;
  EXPECT_EQ(c.respond(" wor", false), "");
  EXPECT_EQ(c.respond("ld", true), " WORLD");
  EXPECT_EQ(c.log.back(), "a:rbody: WORLD:end");
}

TEST(FilterManager, EventFramingDeliversWholeSseEvents) {
  Chain c(/*events_on_a=*/true);
  ResponseHead head;
  head.headers.add("content-type", "text/event-stream");
  c.fm->responseHeaders(head, false);
  EXPECT_EQ(c.respond("data: 1\n\ndata: 2\n\nda", false), "data: 1\n\ndata: 2\n\n");
  EXPECT_EQ(c.respond("ta: 3", false), "");  // no whole event yet
  EXPECT_EQ(c.respond("\n\n", false), "data: 3\n\n");
  EXPECT_EQ(c.respond("data: [DONE]", true), "data: [DONE]");  // the end flushes
  std::vector<std::string> events;
  forEachEvent("data: a\n\ndata: b\r\n\r\ndata: c", false, [&](std::string_view e) { events.emplace_back(e); });
  EXPECT_EQ(events, (std::vector<std::string>{"data: a", "data: b", "data: c"}));
}

TEST(FilterManager, NoFramingWithoutAFilterThatAsks) {
  Chain c;
  ResponseHead head;
  head.headers.add("content-type", "text/event-stream");
  c.fm->responseHeaders(head, false);
  EXPECT_EQ(c.respond("data: 1\n\nda", false), "data: 1\n\nda");
}

TEST(FilterManager, UsageIsExtractedBeforeTheFiltersSeeAnEvent) {
  Chain c(false, /*usage_on_b=*/true);
  EXPECT_TRUE(c.fm->wantsUsage());
  ResponseHead head;
  head.status = 200;
  head.headers.add("content-type", "text/event-stream");
  c.fm->responseHeaders(head, false);
  // Asking for usage also frames whole events.
  EXPECT_EQ(c.respond("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"cho", false),
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n");
  EXPECT_EQ(c.ctx.usage.streamed_output, 1);
  c.respond("ices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n", true);
  EXPECT_EQ(c.ctx.usage.input, 5);
  EXPECT_EQ(c.ctx.usage.output, 2);
}

TEST(FilterManager, NoUsageWithoutAFilterThatAsks) {
  Chain c;
  EXPECT_FALSE(c.fm->wantsUsage());
  ResponseHead head;
  head.status = 200;
  head.headers.add("content-type", "application/json");
  c.fm->responseHeaders(head, false);
  c.respond(R"({"usage":{"prompt_tokens":5,"completion_tokens":2}})", true);
  EXPECT_FALSE(c.ctx.usage.reported());
}

TEST(FilterManager, EndResponseMakesThisEventTheLast) {
  Chain c(/*events_on_a=*/true);
  c.b->end_response_at = 2;
  ResponseHead head;
  head.headers.add("content-type", "text/event-stream");
  c.fm->responseHeaders(head, false);
  EXPECT_EQ(c.respond("data: 1\n\n", false), "data: 1\n\n");
  EXPECT_FALSE(c.fm->responseEnded());
  // b runs first on the response side: a sees the added event, with end_stream.
  EXPECT_EQ(c.respond("data: 2\n\n", false), "data: 2\n\ndata: bye\n\n");
  EXPECT_TRUE(c.fm->responseEnded());
  EXPECT_EQ(c.log.back(), "a:rbody:data: 2\n\ndata: bye\n\n:end");
}

TEST(FilterManager, TrailersComeAfterTheBodyEnds) {
  Chain c;
  ResponseHead head;
  c.fm->responseHeaders(head, false);
  c.respond("x", false);
  c.respond("", true);
  HeaderList trailers;
  trailers.add("grpc-status", "0");
  EXPECT_EQ(c.fm->responseTrailers(trailers), FilterManager::Progress::Done);
  EXPECT_EQ(c.log, (Log{"b:response", "a:response", "b:rbody:x", "a:rbody:x", "b:rbody::end", "a:rbody::end",
                        "b:trailers", "a:trailers"}));
  EXPECT_TRUE(trailers.get("x-a-trailer"));
}

TEST(StreamContext, TypedStateAndCancelHooks) {
  static const StateKey<std::string> kTenant;
  static const StateKey<int> kTokens;
  StreamContext ctx;
  EXPECT_EQ(ctx.state.get(kTenant), nullptr);
  ctx.state.emplace(kTenant, "team-a");
  ctx.state.emplace(kTokens, 42);
  EXPECT_EQ(*ctx.state.get(kTenant), "team-a");
  EXPECT_EQ(*ctx.state.get(kTokens), 42);
  int cancelled = 0;
  ctx.addCancelHook([&] { ++cancelled; });
  {
    CancelHook scoped(ctx, [&] { cancelled += 10; });
  }
  CancelSlot slot;
  slot.set(ctx, [&] { cancelled += 100; });
  slot.set(ctx, [&] { cancelled += 1000; });  // replaces
  ctx.cancel();
  ctx.cancel();  // once
  EXPECT_EQ(cancelled, 1001);
}

TEST(HeaderList, CaseInsensitive) {
  HeaderList h;
  h.add("Content-Type", "a");
  h.add("X-Y", "1");
  EXPECT_EQ(*h.get("content-type"), "a");
  h.set("x-y", "2");
  EXPECT_EQ(*h.get("X-Y"), "2");
  h.remove("CONTENT-TYPE");
  EXPECT_FALSE(h.get("content-type"));
}

}  // namespace
}  // namespace infermesh::filter
