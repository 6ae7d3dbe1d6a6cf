// GenAI telemetry end to end (docs/observability.md): the telemetry filter's
// token, latency and cost metrics against what the mock model server
// produced, streamed and not, scraped from the proxy's /metrics.

#include <fstream>
#include <sstream>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/jwt_signer.h"

namespace infermesh::testing {
namespace {

constexpr const char* kKey = "sk-telemetry-team-0001";

class TelemetryTest : public ProxyTest {
 protected:
  static void SetUpTestSuite() {
    bin_dir = binariesDir();
    engine = startMock("telemetry", {"--models", "chat,embed", "--chunks", "8", "--chunk-delay-ms", "5"});
  }
  static void TearDownTestSuite() { engine.process.reset(); }
  static inline Mock engine;

  void SetUp() override {
    std::ostringstream y;
    y << "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec:\n"
      << "  address: 127.0.0.1:0\n"
      << "  filters: [{name: authn}, {name: authz}, {name: telemetry, config: {role: sidecar}}, {name: router}]\n"
      << "  accessLog: {path: " << dir.path() << "/access.log}\n"
      << doc("Model", "chat",
             "{aliases: [chat-latest], endpoints: [{address: '" + engine.address() +
                 "'}], pricing: {inputPer1kTokens: 2.0, outputPer1kTokens: 10.0}}")
      << doc("Model", "embed", "{endpoints: [{address: '" + engine.address() + "'}]}")
      << doc("Route", "pinned", "{order: 1, match: {pathPrefix: /v1/, headers: [{name: x-pin}]}, model: chat}")
      << doc("Route", "v1", "{match: {pathPrefix: /v1/}}")
      << doc("Tenant", "team-a", "{apiKeys: [{name: ci, sha256: " + sha256Hex(kKey) + "}]}")
      << doc("Policy", "open", "{listeners: [main], authentication: {required: false}}");
    startProxy(y.str());
  }

  HttpResponse send(const std::string& path, const std::string& body, std::map<std::string, std::string> headers = {}) {
    headers.emplace("content-type", "application/json");
    headers.emplace("authorization", std::string("Bearer ") + kKey);
    return httpRequest(port, "POST", path, body, headers);
  }
  static long usageField(const std::string& body, const std::string& key) {
    const auto at = body.rfind("\"" + key + "\":");
    return at == std::string::npos ? -1 : std::atol(body.c_str() + at + key.size() + 3);
  }
};

TEST_F(TelemetryTest, CountsTokensAndCostOfAnAnswer) {
  const auto r = send("/v1/chat/completions", chatBody("chat", false));
  ASSERT_EQ(r.status, 200) << r.body;
  const long prompt = usageField(r.body, "prompt_tokens");
  ASSERT_GT(prompt, 0);
  EXPECT_EQ(usageField(r.body, "completion_tokens"), 8);
  const std::string genai = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"openai\",gen_ai_request_model=\"chat\","
                            "gen_ai_response_model=\"chat\"";
  EXPECT_EQ(metricReaching("gen_ai_client_token_usage_sum", genai + ",gen_ai_token_type=\"output\"", 8), 8);
  EXPECT_EQ(metric("gen_ai_client_token_usage_count", genai + ",gen_ai_token_type=\"output\""), 1);
  EXPECT_EQ(metric("gen_ai_client_token_usage_sum", genai + ",gen_ai_token_type=\"input\""), prompt);
  EXPECT_EQ(metric("gen_ai_server_request_duration_seconds_count", genai), 1);
  EXPECT_EQ(metric("gen_ai_server_time_to_first_token_seconds_count", genai), 0);  // not a stream
  const std::string mesh = "model=\"chat\",tenant=\"team-a\",route=\"v1\"";
  EXPECT_EQ(metric("infermesh_genai_tokens_total", mesh + ",type=\"output\""), 8);
  EXPECT_EQ(metric("infermesh_genai_tokens_total", mesh + ",type=\"input\""), prompt);
  // 2.0 per 1k input, 10.0 per 1k output.
  EXPECT_NEAR(metric("infermesh_genai_cost_total", mesh), (prompt * 2.0 + 8 * 10.0) / 1000.0, 1e-9);
  EXPECT_EQ(metric("infermesh_genai_requests_in_flight", "model=\"chat\""), 0);
  // This hop's own time: counted once, and a small part of the whole.
  EXPECT_EQ(metric("infermesh_proxy_overhead_seconds_count", "role=\"sidecar\""), 1);
  const double overhead = metric("infermesh_proxy_overhead_seconds_sum", "role=\"sidecar\"");
  EXPECT_GT(overhead, 0);
  EXPECT_LT(overhead, metric("gen_ai_server_request_duration_seconds_sum", genai));
  EXPECT_EQ(metric("infermesh_genai_queue_seconds_count", "model=\"chat\""), 1);  // no circuit breaker: no wait
  EXPECT_LT(metric("infermesh_genai_queue_seconds_sum", "model=\"chat\""), 0.01);
}

TEST_F(TelemetryTest, TheAccessLogCarriesTenantTokensAndCost) {
  const auto r = send("/v1/chat/completions", chatBody("chat", false));
  ASSERT_EQ(r.status, 200) << r.body;
  const long prompt = usageField(r.body, "prompt_tokens");
  std::string line;
  ASSERT_TRUE(eventually([&] {
    std::ifstream in(dir.path() + "/access.log");
    return static_cast<bool>(std::getline(in, line));
  }));
  EXPECT_NE(line.find("\"tenant\":\"team-a\""), std::string::npos) << line;
  EXPECT_NE(line.find("\"principal\":\"team-a/ci\""), std::string::npos) << line;
  EXPECT_NE(line.find("\"input_tokens\":" + std::to_string(prompt) + ","), std::string::npos) << line;
  EXPECT_NE(line.find("\"output_tokens\":8,"), std::string::npos) << line;
  char cost[32];
  std::snprintf(cost, sizeof cost, "\"cost\":%.6f", (prompt * 2.0 + 8 * 10.0) / 1000.0);
  EXPECT_NE(line.find(cost), std::string::npos) << line;
}

TEST_F(TelemetryTest, StreamsGetTimeToFirstTokenAndPerOutputToken) {
  const auto r = send("/v1/chat/completions", chatBody("chat", true));
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string genai = "gen_ai_request_model=\"chat\",gen_ai_response_model=\"chat\"";
  EXPECT_EQ(metricReaching("gen_ai_server_time_to_first_token_seconds_count", genai, 1), 1);
  EXPECT_EQ(metric("gen_ai_server_time_per_output_token_seconds_count", genai), 1);
  // Eight events 5 ms apart: the mean gap per token after the first is in
  // the 5 ms neighbourhood, well under a second.
  const double tpot = metric("gen_ai_server_time_per_output_token_seconds_sum", genai);
  EXPECT_GT(tpot, 0.001);
  EXPECT_LT(tpot, 0.5);
  EXPECT_LT(metric("gen_ai_server_time_to_first_token_seconds_sum", genai), 2.0);
  // Output tokens from the usage chunk the engine was asked for (or the
  // metered deltas): eight.
  EXPECT_EQ(metric("gen_ai_client_token_usage_sum", genai + ",gen_ai_token_type=\"output\""), 8);
}

TEST_F(TelemetryTest, ModelNamesComeFromTheConfigOnly) {
  // An alias is counted under its model's name.
  ASSERT_EQ(send("/v1/chat/completions", chatBody("chat-latest", false)).status, 200);
  // A name the config does not know, on a route that pins the model: "other".
  ASSERT_EQ(send("/v1/chat/completions", chatBody("made-up-model-1234", false), {{"x-pin", "1"}}).status, 200);
  EXPECT_EQ(metricReaching("infermesh_genai_requests_total", "model=\"chat\"", 2), 2);
  EXPECT_EQ(metric("gen_ai_server_request_duration_seconds_count", "gen_ai_request_model=\"chat\""), 1);
  EXPECT_EQ(metric("gen_ai_server_request_duration_seconds_count", "gen_ai_request_model=\"other\""), 1);
  EXPECT_EQ(httpGetBody(admin, "/metrics").find("made-up-model-1234"), std::string::npos);
  // Unknown to the config and not pinned: a 404 no model served, not counted.
  EXPECT_EQ(send("/v1/chat/completions", chatBody("made-up-model-1234", false)).status, 404);
  // Once the 404's stream has completed (the HTTP metrics count it), the
  // GenAI count is still two.
  EXPECT_EQ(metricReaching("infermesh_http_requests_total", "status_class=\"4xx\"", 1), 1);
  EXPECT_EQ(metric("infermesh_genai_requests_total"), 2);
}

TEST_F(TelemetryTest, EmbeddingsAreTheirOwnOperation) {
  const auto r = send("/v1/embeddings", R"({"model":"embed","input":"hello there"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(metricReaching("gen_ai_client_token_usage_count", "gen_ai_operation_name=\"embeddings\"", 1), 1);
  // No pricing: no cost; the tenant is whoever the key belongs to.
  EXPECT_EQ(metric("infermesh_genai_cost_total", "model=\"embed\",tenant=\"team-a\""), 0);
}

TEST_F(TelemetryTest, PrometheusAnswersTokensByTenant) {
  ASSERT_EQ(send("/v1/chat/completions", chatBody("chat", false)).status, 200);
  ASSERT_EQ(send("/v1/chat/completions", chatBody("chat", true)).status, 200);
  // promtool's lint accepts the GenAI families as exposed.
  std::ofstream(dir.path() + "/metrics.txt") << httpGetBody(admin, "/metrics");
  const auto lint = runCommand("promtool check metrics < " + dir.path() + "/metrics.txt 2>&1");
  EXPECT_EQ(lint.status, 0) << lint.out;
  // A real Prometheus scrapes the proxy; PromQL sums tokens by tenant:
  // sum by (tenant) (infermesh_genai_tokens_total{type="output"})
  const std::string body =
      prometheusQuery("sum%20by%20(tenant)%20(infermesh_genai_tokens_total%7Btype%3D%22output%22%7D)");
  EXPECT_NE(body.find("\"tenant\":\"team-a\""), std::string::npos) << body;
  EXPECT_NE(body.find("\"16\"]"), std::string::npos) << body;  // 8 + 8 output tokens
}

}  // namespace
}  // namespace infermesh::testing
