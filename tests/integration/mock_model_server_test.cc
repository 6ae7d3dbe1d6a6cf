// The mock model server must stay faithful to the OpenAI API shapes, since
// every other test and benchmark leans on it.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/http_client.h"
#include "tests/support/process.h"

namespace infermesh::testing {
namespace {

class MockServerTest : public ::testing::Test {
 protected:
  void start(std::vector<std::string> extra) {
    std::vector<std::string> argv{binariesDir() + "/bench/infermesh-mock-model", "--port", "0", "--name", "m1",
                                  "--models", "m-chat,m-embed", "--chunks", "4"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    mock_ = Process::start(argv, "/tmp/infermesh-test-mock-unit.log");
    port_ = portOf(mock_->waitForLine("listening "));
    ASSERT_GT(port_, 0);
  }
  HttpResponse post(const std::string& path, const std::string& body) {
    return httpRequest(port_, "POST", path, body);
  }
  std::unique_ptr<Process> mock_;
  int port_ = 0;
};

TEST_F(MockServerTest, ChatCompletionWithUsage) {
  start({});
  auto r = post("/v1/chat/completions", chatBody("m-chat", false));
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["content-type"], "application/json");
  EXPECT_NE(r.body.find("\"object\":\"chat.completion\""), std::string::npos);
  EXPECT_NE(r.body.find("\"message\":{\"role\":\"assistant\",\"content\":"), std::string::npos);
  EXPECT_NE(r.body.find("\"usage\":{\"prompt_tokens\":"), std::string::npos);
  EXPECT_NE(r.body.find("\"completion_tokens\":4"), std::string::npos);
  EXPECT_EQ(r.headers["x-mock-server"], "m1");
  EXPECT_EQ(r.headers["endpoint-load-metrics"].rfind("TEXT named_metrics.num_requests_running=", 0), 0u);
}

TEST_F(MockServerTest, BatchSlotsQueueAndReportLoad) {
  start({"--max-concurrency", "1", "--ttft-ms", "400"});
  // One generation holds the only slot; the next waits for it in the queue.
  std::thread a([&] { post("/v1/chat/completions", chatBody("m-chat", false)); });
  std::thread b([&] { post("/v1/chat/completions", chatBody("m-chat", false)); });
  const bool queued = eventually(
      [&] {
        auto r = httpRequest(port_, "GET", "/metrics/orca", "");
        EXPECT_EQ(r.status, 200);
        return r.body.find("num_requests_running=1, named_metrics.num_requests_waiting=1") != std::string::npos;
      },
      std::chrono::milliseconds(1000), std::chrono::milliseconds(5));
  a.join();
  b.join();
  EXPECT_TRUE(queued) << "never saw one running and one waiting";
  auto r = httpRequest(port_, "GET", "/metrics/orca", "");
  EXPECT_NE(r.body.find("num_requests_running=0, named_metrics.num_requests_waiting=0"), std::string::npos) << r.body;
  EXPECT_EQ(r.headers["endpoint-load-metrics"].rfind("TEXT ", 0), 0u);
}

TEST_F(MockServerTest, PrefixCacheSavesPrefillOfARepeatedPrompt) {
  start({"--prefill-us-per-token", "10", "--prefix-cache-blocks", "64"});
  const std::string prompt(640, 'p');  // 10 blocks, 161 tokens
  const std::string body = "{\"model\":\"m-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"" + prompt + "\"}]}";
  ASSERT_EQ(post("/v1/chat/completions", body).status, 200);
  auto stats = httpRequest(port_, "GET", "/mock/stats", "").body;
  EXPECT_NE(stats.find("\"cached_tokens\":0}"), std::string::npos) << stats;
  ASSERT_EQ(post("/v1/chat/completions", body).status, 200);
  stats = httpRequest(port_, "GET", "/mock/stats", "").body;
  EXPECT_NE(stats.find("\"cached_tokens\":160}"), std::string::npos) << stats;
}

TEST_F(MockServerTest, StreamingSendsChunksUsageAndDone) {
  start({});
  auto r = post("/v1/chat/completions",
                R"({"model":"m-chat","stream":true,"stream_options":{"include_usage":true},"messages":[]})");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["content-type"], "text/event-stream");
  std::size_t events = 0;
  for (std::size_t at = 0; (at = r.body.find("\"chat.completion.chunk\"", at)) != std::string::npos; ++at) ++events;
  EXPECT_EQ(events, 5u);  // 4 tokens + the usage chunk
  EXPECT_NE(r.body.find("\"choices\":[],\"usage\":{"), std::string::npos);
  EXPECT_NE(r.body.find("\"finish_reason\":\"stop\""), std::string::npos);
  EXPECT_EQ(r.body.rfind("data: [DONE]\n\n"), r.body.size() - 14);
  // Without include_usage there is no usage chunk.
  r = post("/v1/chat/completions", chatBody("m-chat", true));
  EXPECT_EQ(r.body.find("usage"), std::string::npos);
}

TEST_F(MockServerTest, CompletionsEmbeddingsAndModels) {
  start({});
  auto r = post("/v1/completions", R"({"model":"m-chat","prompt":"Once upon","max_tokens":2})");
  EXPECT_NE(r.body.find("\"object\":\"text_completion\""), std::string::npos);
  EXPECT_NE(r.body.find("\"finish_reason\":\"length\""), std::string::npos);
  r = post("/v1/embeddings", R"({"model":"m-embed","input":["a","b"]})");
  EXPECT_NE(r.body.find("\"index\":1,\"embedding\":["), std::string::npos);
  r = httpRequest(port_, "GET", "/v1/models");
  EXPECT_NE(r.body.find("{\"id\":\"m-embed\",\"object\":\"model\""), std::string::npos);
  EXPECT_EQ(httpRequest(port_, "GET", "/health").status, 200);
}

TEST_F(MockServerTest, ErrorsInOpenAiShape) {
  start({});
  auto r = post("/v1/chat/completions", "{nope");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("\"type\":\"invalid_request_error\""), std::string::npos);
  r = post("/v1/chat/completions", chatBody("other", false));
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("\"code\":\"model_not_found\""), std::string::npos);
}

TEST_F(MockServerTest, InjectedRateLimitsAndServerErrors) {
  start({"--error-429-rate", "1", "--retry-after", "7"});
  auto r = post("/v1/chat/completions", chatBody("m-chat", false));
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.headers["retry-after"], "7");
  EXPECT_NE(r.body.find("\"type\":\"rate_limit_error\""), std::string::npos);
  mock_.reset();
  start({"--error-500-rate", "1"});
  r = post("/v1/chat/completions", chatBody("m-chat", false));
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("\"type\":\"server_error\""), std::string::npos);
}

TEST_F(MockServerTest, InjectedResetCutsTheStream) {
  start({"--reset-rate", "1"});
  auto r = post("/v1/chat/completions", chatBody("m-chat", true));
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.complete);
  EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);
}

}  // namespace
}  // namespace infermesh::testing
