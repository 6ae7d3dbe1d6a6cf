#include "proxy/filter/usage.h"

#include <gtest/gtest.h>

namespace infermesh::filter {
namespace {

ResponseHead head(unsigned status, const std::string& type) {
  ResponseHead h;
  h.status = status;
  h.headers.add("content-type", type);
  return h;
}

TEST(UsageTest, ReadsOpenAiUsageWithDetails) {
  Usage u;
  ASSERT_TRUE(readUsage(R"({"id":"x","usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,
      "prompt_tokens_details":{"cached_tokens":8},"completion_tokens_details":{"reasoning_tokens":5}}})",
                        u));
  EXPECT_EQ(u.input, 12);
  EXPECT_EQ(u.output, 34);
  EXPECT_EQ(u.cached_input, 8);
  EXPECT_EQ(u.reasoning, 5);
  EXPECT_TRUE(u.reported());
}

TEST(UsageTest, ReadsAnthropicStartAndDelta) {
  Usage u;
  // message_start: its output_tokens is a placeholder, not the count.
  ASSERT_TRUE(readUsage(R"({"type":"message_start","message":{"id":"m","usage":{"input_tokens":25,
      "cache_read_input_tokens":10,"output_tokens":1}}})",
                        u));
  EXPECT_EQ(u.input, 25);
  EXPECT_EQ(u.cached_input, 10);
  EXPECT_FALSE(u.reported());
  ASSERT_TRUE(readUsage(R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}})",
                        u));
  EXPECT_EQ(u.input, 25);
  EXPECT_EQ(u.output, 15);
}

TEST(UsageTest, IgnoresWhatIsNotUsage) {
  Usage u;
  EXPECT_FALSE(readUsage(R"({"choices":[]})", u));
  EXPECT_FALSE(readUsage(R"({"usage":"lots"})", u));
  EXPECT_FALSE(readUsage(R"(not json "usage")", u));
  EXPECT_TRUE(readUsage(R"({"usage":{"prompt_tokens":-3,"completion_tokens":"7"}})", u));
  EXPECT_EQ(u.input, -1);  // a negative or non-integer count is no count
  EXPECT_EQ(u.output, -1);
}

TEST(UsageTest, MetersDeltas) {
  EXPECT_EQ(meterDeltaTokens(R"({"choices":[{"index":0,"delta":{"content":"Hi"}}]})"), 1);
  EXPECT_EQ(meterDeltaTokens(R"({"choices":[{"index":0,"delta":{"role":"assistant"}}]})"), 0);
  // 16 bytes count as one token; each 4 bytes past that one more.
  EXPECT_EQ(meterDeltaTokens(R"({"choices":[{"delta":{"content":"0123456789abcdef0123"}}]})"), 2);
  EXPECT_EQ(meterDeltaTokens(
                R"({"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\""}}]}},{"text":"x"}]})"),
            2);
  EXPECT_EQ(meterDeltaTokens(R"({"type":"content_block_delta","delta":{"type":"text_delta","text":"yo"}})"), 1);
  EXPECT_EQ(meterDeltaTokens("garbage"), 0);
}

TEST(UsageTest, ExtractsFromAJsonAnswerInPieces) {
  UsageExtractor x;
  Usage u;
  x.onHeaders(head(200, "application/json"));
  const std::string body = R"({"choices":[{"message":{"content":"hello"}}],"usage":{"prompt_tokens":3,"completion_tokens":4}})";
  x.onBody(std::string_view(body).substr(0, 20), false, u);
  x.onBody(std::string_view(body).substr(20), true, u);
  EXPECT_EQ(u.input, 3);
  EXPECT_EQ(u.output, 4);
}

TEST(UsageTest, IgnoresErrorsAndOtherTypes) {
  for (auto [status, type] : {std::pair<unsigned, const char*>{429, "application/json"}, {200, "text/plain"}}) {
    UsageExtractor x;
    Usage u;
    x.onHeaders(head(status, type));
    x.onBody(R"({"usage":{"prompt_tokens":3,"completion_tokens":4}})", true, u);
    EXPECT_FALSE(u.reported()) << status << " " << type;
  }
}

TEST(UsageTest, DropsAnOversizedJsonAnswer) {
  UsageExtractor x;
  Usage u;
  x.onHeaders(head(200, "application/json"));
  const std::string pad(UsageExtractor::kMaxJsonBody, ' ');
  x.onBody("{\"a\":1,", false, u);
  x.onBody(pad, false, u);
  x.onBody(R"("usage":{"prompt_tokens":3,"completion_tokens":4}})", true, u);
  EXPECT_FALSE(u.reported());
}

TEST(UsageTest, MetersAnSseStreamThenTakesTheReportedCount) {
  UsageExtractor x;
  Usage u;
  x.onHeaders(head(200, "text/event-stream; charset=utf-8"));
  x.onBody("data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"
           ": keep-alive\n\n"
           "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\r\n\r\n",
           false, u);
  EXPECT_EQ(u.streamed_output, 2);
  EXPECT_EQ(u.outputSoFar(), 2);
  x.onBody("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n", true,
           u);
  EXPECT_EQ(u.output, 3);
  EXPECT_EQ(u.outputSoFar(), 3);
  EXPECT_EQ(u.input, 9);
}

TEST(UsageTest, JoinsMultiLineSseData) {
  UsageExtractor x;
  Usage u;
  x.onHeaders(head(200, "text/event-stream"));
  x.onBody("event: message_delta\ndata: {\"type\":\"message_delta\",\ndata: \"usage\":{\"output_tokens\":7}}\n\n", true,
           u);
  EXPECT_EQ(u.output, 7);
}

TEST(UsageTest, ReadsNdjson) {
  UsageExtractor x;
  Usage u;
  x.onHeaders(head(200, "application/x-ndjson"));
  x.onBody("{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n",
           true, u);
  EXPECT_EQ(u.streamed_output, 1);
  EXPECT_EQ(u.output, 2);
}

}  // namespace
}  // namespace infermesh::filter
