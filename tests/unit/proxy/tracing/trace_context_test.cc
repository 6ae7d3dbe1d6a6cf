#include "proxy/tracing/trace_context.h"

#include <gtest/gtest.h>

#include <set>

#include "proxy/tracing/stream_trace.h"

namespace infermesh::tracing {
namespace {

TEST(TraceContext, ParsesTheSpecsExample) {
  const auto p = parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  ASSERT_TRUE(p);
  EXPECT_EQ(toHex(p->trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(toHex(p->parent_id), "00f067aa0ba902b7");
  EXPECT_TRUE(p->sampled());
  EXPECT_EQ(formatTraceparent(p->trace_id, p->parent_id, p->flags),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
}

TEST(TraceContext, RefusesWhatTheSpecRefuses) {
  for (const char* bad : {
           "",                                                           // empty
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",     // short
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  // version 00 with more
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // version ff
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",    // uppercase
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    // zero parent id
           "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // separator
           "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // not hex
       })
    EXPECT_FALSE(parseTraceparent(bad)) << bad;
}

TEST(TraceContext, ReadsALaterVersionByItsPrefix) {
  EXPECT_TRUE(parseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future"));
  EXPECT_TRUE(parseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  EXPECT_FALSE(parseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01future"));
}

TEST(TraceContext, TracestateIsBounded) {
  EXPECT_TRUE(validTracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"));
  EXPECT_FALSE(validTracestate(std::string(513, 'a')));
  std::string many;
  for (int i = 0; i < 33; ++i) many += (i ? ",k" : "k") + std::to_string(i) + "=v";
  EXPECT_FALSE(validTracestate(many));
  EXPECT_FALSE(validTracestate("a=b\nc=d"));
}

TEST(TraceContext, NewIdsAreRandomAndNeverZero) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const auto t = newTraceId();
    const auto s = newSpanId();
    EXPECT_FALSE(isZero(t));
    EXPECT_FALSE(isZero(s));
    seen.insert(toHex(t));
  }
  EXPECT_EQ(seen.size(), 1000u);
}

TEST(StreamTrace, EachSampledAttemptGetsItsOwnSpan) {
  StreamTrace t;
  t.trace_id = newTraceId();
  t.span_id = newSpanId();
  t.flags = kSampledFlag;
  const std::string first = t.beginAttempt("chat", "10.0.0.1:8000", "eu", false);
  t.endAttempt(0, "upstream_reset");
  const std::string second = t.beginAttempt("chat-b", "10.0.0.2:8000", "", true);
  t.endAttempt(200, "");
  ASSERT_EQ(t.attempts.size(), 2u);
  EXPECT_EQ(first, formatTraceparent(t.trace_id, t.attempts[0].span_id, kSampledFlag));
  EXPECT_EQ(second, formatTraceparent(t.trace_id, t.attempts[1].span_id, kSampledFlag));
  EXPECT_NE(t.attempts[0].span_id, t.attempts[1].span_id);
  EXPECT_EQ(t.attempts[0].error, "upstream_reset");
  EXPECT_EQ(t.attempts[1].number, 2);
  EXPECT_TRUE(t.attempts[1].fallback);
  EXPECT_LE(t.attempts[0].start, t.attempts[0].end);
}

TEST(StreamTrace, AnUnsampledTraceNamesTheRequestsSpanAndRecordsNothing) {
  StreamTrace t;
  t.trace_id = newTraceId();
  t.span_id = newSpanId();
  EXPECT_EQ(t.beginAttempt("chat", "10.0.0.1:8000", "", false), formatTraceparent(t.trace_id, t.span_id, 0));
  t.endAttempt(200, "");
  EXPECT_TRUE(t.attempts.empty());
}

}  // namespace
}  // namespace infermesh::tracing
