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
  FilterStatus onRequestBody(StreamContext&, std::string_view chunk, bool end) override {
    log_.push_back(name_ + ":body:" + std::string(chunk) + (end ? ":end" : ""));
    return stop_on_body ? FilterStatus::Stop : FilterStatus::Continue;
  }
  void onResponseHeaders(StreamContext&, ResponseHead& head) override {
    log_.push_back(name_ + ":response");
    head.headers.add("x-" + name_, "1");
  }
  void onLog(const StreamContext&) override { log_.push_back(name_ + ":log"); }
  void resumeNow() { callbacks_->resume(); }

  bool stop_on_headers = false;
  bool stop_on_body = false;
  bool reply_on_headers = false;

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
  Chain() {
    auto pa = std::make_unique<Probe>("a", log);
    auto pb = std::make_unique<Probe>("b", log);
    a = pa.get();
    b = pb.get();
    std::vector<std::unique_ptr<StreamFilter>> v;
    v.push_back(std::move(pa));
    v.push_back(std::move(pb));
    fm = std::make_unique<FilterManager>(ctx, std::move(v));
    fm->on_resume = [this](FilterManager::Progress p) { resumed.push_back(p); };
  }
};

using Log = std::vector<std::string>;

TEST(FilterManager, RunsRequestPhasesInOrderAndResponseInReverse) {
  Chain c;
  EXPECT_EQ(c.fm->requestHeaders(false), FilterManager::Progress::Done);
  EXPECT_EQ(c.fm->requestBody("xy", true), FilterManager::Progress::Done);
  ResponseHead head;
  c.fm->responseHeaders(head);
  c.fm->log();
  EXPECT_EQ(c.log, (Log{"a:headers", "b:headers", "a:body:xy:end", "b:body:xy:end", "b:response", "a:response",
                        "a:log", "b:log"}));
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
