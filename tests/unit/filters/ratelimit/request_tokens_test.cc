#include "filters/ratelimit/request_tokens.h"

#include <gtest/gtest.h>
#include <simdjson.h>

#include "proxy/tokenizer/bpe_tokenizer.h"

namespace infermesh::ratelimit {
namespace {

std::int64_t est(std::string_view s) { return static_cast<std::int64_t>(tokenizer::estimateTokens(s)); }

TEST(RequestTokensTest, CountsChatMessagesWithTheirFraming) {
  const auto r = readRequestTokens(
      R"({"model":"m","max_tokens":50,"stream":true,"messages":[
          {"role":"system","content":"Be brief."},
          {"role":"user","name":"ci","content":[{"type":"text","text":"Hello there"},{"type":"image_url"}]}]})",
      nullptr);
  ASSERT_TRUE(r.valid);
  EXPECT_EQ(r.input, 3 + est("system") + est("Be brief.") + 3 + est("user") + est("Hello there") + 1 + est("ci") + 3);
  EXPECT_EQ(r.max_output, 50);
  EXPECT_TRUE(r.stream);
  EXPECT_FALSE(r.has_stream_options);
}

TEST(RequestTokensTest, CountsPromptsInputsAndAnthropicSystem) {
  auto r = readRequestTokens(R"({"prompt":"Once upon a time","max_completion_tokens":7})", nullptr);
  EXPECT_EQ(r.input, est("Once upon a time"));
  EXPECT_EQ(r.max_output, 7);
  r = readRequestTokens(R"({"input":["alpha beta","gamma"]})", nullptr);
  EXPECT_EQ(r.input, est("alpha beta") + est("gamma"));
  EXPECT_EQ(r.max_output, -1);
  r = readRequestTokens(R"({"system":"You are terse.","messages":[]})", nullptr);
  EXPECT_EQ(r.input, est("You are terse.") + 3);
}

TEST(RequestTokensTest, ReadsStreamOptions) {
  auto r = readRequestTokens(R"({"stream":true,"stream_options":{"include_usage":true}})", nullptr);
  EXPECT_TRUE(r.has_stream_options);
  EXPECT_TRUE(r.include_usage);
  r = readRequestTokens(R"({"stream":true,"stream_options":{}})", nullptr);
  EXPECT_TRUE(r.has_stream_options);
  EXPECT_FALSE(r.include_usage);
}

TEST(RequestTokensTest, BadBodiesAreNotValid) {
  EXPECT_FALSE(readRequestTokens("", nullptr).valid);
  EXPECT_FALSE(readRequestTokens("[1,2]", nullptr).valid);
  EXPECT_FALSE(readRequestTokens(R"({"messages":)", nullptr).valid);
  const auto r = readRequestTokens(R"({"messages":"nope","max_tokens":-4,"stream":"yes"})", nullptr);
  EXPECT_TRUE(r.valid);
  EXPECT_EQ(r.input, 0);
  EXPECT_EQ(r.max_output, -1);
  EXPECT_FALSE(r.stream);
}

TEST(RequestTokensTest, RequestsStreamUsageAsValidJson) {
  simdjson::dom::parser p;
  for (std::string body : {std::string(R"({"stream":true})"), std::string("{ }"), std::string("{\"a\":[{}]}\n")}) {
    ASSERT_TRUE(requestStreamUsage(body));
    simdjson::dom::element doc;
    ASSERT_FALSE(p.parse(body).get(doc)) << body;
    bool b = false;
    EXPECT_FALSE(doc["stream_options"]["include_usage"].get_bool().get(b)) << body;
    EXPECT_TRUE(b);
  }
  std::string none = "no object";
  EXPECT_FALSE(requestStreamUsage(none));
}

}  // namespace
}  // namespace infermesh::ratelimit
