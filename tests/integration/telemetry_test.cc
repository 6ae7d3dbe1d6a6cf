// GenAI telemetry end to end (docs/observability.md): the telemetry filter's
// token, latency and cost metrics against what the mock model server
// produced, streamed and not, scraped from the proxy's /metrics.

#include <algorithm>
#include <atomic>
#include <fstream>
#include <iterator>
#include <thread>
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

  void SetUp() override { start(); }
  // The telemetry filter's config and more YAML documents, for tests that
  // need their own.
  void start(const std::string& telemetry = "{role: sidecar}", const std::string& docs = "",
             const std::string& access_log = "") {
    std::ostringstream y;
    y << "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec:\n"
      << "  address: 127.0.0.1:0\n"
      << "  filters: [{name: authn}, {name: authz}, {name: telemetry, config: " << telemetry << "}, {name: router}]\n"
      << "  accessLog: {path: " << dir.path() << "/access.log" << access_log << "}\n" << docs
      << doc("Model", "chat",
             "{aliases: [chat-latest], endpoints: [{address: '" + engine.address() +
                 "', region: eu-west}], pricing: {inputPer1kTokens: 2.0, outputPer1kTokens: 10.0}}")
      << doc("Model", "embed", "{endpoints: [{address: '" + engine.address() + "'}]}")
      << doc("Route", "pinned", "{order: 1, match: {pathPrefix: /v1/, headers: [{name: x-pin}]}, model: chat}")
      << doc("Route", "v1", "{match: {pathPrefix: /v1/}}")
      << doc("Tenant", "team-a", "{apiKeys: [{name: ci, sha256: " + sha256Hex(kKey) + "}]}")
      << doc("Policy", "open", "{listeners: [main], authentication: {required: false}}");
    proxy.reset();
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
  // The HTTP duration histogram is per route and served model too.
  EXPECT_EQ(metricReaching("infermesh_http_request_duration_seconds_count", "route=\"v1\",model=\"chat\"", 1), 1);
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

TEST_F(TelemetryTest, TheAccessLogTakesTheFieldsTheListenerChose) {
  start("{role: sidecar}", "",
        ", fields: [status, served_model, tenant, ttft_ms, routing], "
        "extra: [{name: team, header: X-Team-Id}, {name: user, body: user}, {name: seed, body: seed}]");
  const std::string body = R"({"model":"chat","stream":true,"user":"ana \"the\" admin","seed":7,)"
                           R"("messages":[{"role":"user","content":"hi"}]})";
  ASSERT_EQ(send("/v1/chat/completions", body, {{"x-team-id", "search \"blue\""}}).status, 200);
  ASSERT_EQ(send("/v1/chat/completions", chatBody("chat", false)).status, 200);  // no team header, no user
  std::vector<std::string> lines;
  ASSERT_TRUE(eventually([&] {
    lines.clear();
    std::ifstream in(dir.path() + "/access.log");
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    return lines.size() >= 2;
  }));
  // The chosen fields in the chosen order, then the extra ones, escaped.
  EXPECT_EQ(lines[0].rfind("{\"status\":200,\"served_model\":\"chat\",\"tenant\":\"team-a\",\"ttft_ms\":", 0), 0u)
      << lines[0];
  EXPECT_NE(lines[0].find(",\"routing\":\"requested\",\"team\":\"search \\\"blue\\\"\",\"user\":\"ana \\\"the\\\" admin\",\"seed\":\"7\"}"),
            std::string::npos)
      << lines[0];
  EXPECT_EQ(lines[0].find("request_id"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("\"ttft_ms\":null"), std::string::npos) << lines[1];  // not a stream
  EXPECT_NE(lines[1].find("\"team\":null,\"user\":null,\"seed\":null}"), std::string::npos) << lines[1];
}

TEST_F(TelemetryTest, AccessLogFieldsAreChecked) {
  dir.write("config.yaml",
            "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec:\n  address: 127.0.0.1:0\n"
            "  filters: [{name: router}]\n"
            "  accessLog: {path: stdout, fields: [status, statuss], extra: [{name: status, header: x-a}, "
            "{name: both, header: x-b, body: b}]}\n");
  const auto r = runCommand(bin_dir + "/controlplane/infermeshctl validate " + dir.path() + " 2>&1");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("spec.accessLog.fields[1]: unknown field \"statuss\" (request_id, client,"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("spec.accessLog.extra[0].name: \"status\" is already a field of the line"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("spec.accessLog.extra[1]: needs exactly one of header"), std::string::npos) << r.out;
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

TEST_F(TelemetryTest, SeriesCarryTheEndpointsRegion) {
  ASSERT_EQ(send("/v1/chat/completions", chatBody("chat", false)).status, 200);
  ASSERT_EQ(send("/v1/embeddings", R"({"model":"embed","input":"hi"})").status, 200);
  EXPECT_EQ(metricReaching("infermesh_genai_requests_total", "route=\"v1\",region=\"eu-west\"", 1), 1);
  EXPECT_EQ(metricReaching("infermesh_genai_requests_total", "model=\"embed\",tenant=\"team-a\",route=\"v1\",region=\"-\"", 1), 1);
  EXPECT_EQ(metric("infermesh_genai_tokens_total", "type=\"output\",region=\"eu-west\""), 8);
}

TEST_F(TelemetryTest, TheGovernorFoldsModelsAndTenantsPastItsLimits) {
  start("{role: sidecar, maxModels: 1, maxTenants: 1}",
        doc("Tenant", "team-b", "{apiKeys: [{name: ci, sha256: " + sha256Hex("sk-telemetry-team-0002") + "}]}"));
  ASSERT_EQ(send("/v1/chat/completions", chatBody("chat", false)).status, 200);  // chat and team-a are first
  ASSERT_EQ(send("/v1/embeddings", R"({"model":"embed","input":"hi"})").status, 200);
  ASSERT_EQ(httpRequest(port, "POST", "/v1/chat/completions", chatBody("chat", false),
                        {{"content-type", "application/json"}, {"authorization", "Bearer sk-telemetry-team-0002"}})
                .status,
            200);
  EXPECT_EQ(metricReaching("infermesh_genai_requests_total", "model=\"other\",tenant=\"team-a\"", 1), 1);
  EXPECT_EQ(metricReaching("infermesh_genai_requests_total", "model=\"chat\",tenant=\"other\"", 1), 1);
  EXPECT_EQ(metric("infermesh_genai_requests_total", "model=\"chat\",tenant=\"team-a\""), 1);
  EXPECT_EQ(metric("gen_ai_server_request_duration_seconds_count", "gen_ai_response_model=\"other\""), 1);
  const std::string text = httpGetBody(admin, "/metrics");
  EXPECT_EQ(text.find("model=\"embed\",tenant"), std::string::npos);
  EXPECT_EQ(text.find("tenant=\"team-b\""), std::string::npos);
  EXPECT_EQ(metric("infermesh_telemetry_folded_values_total", "label=\"model\""), 1);
  EXPECT_EQ(metric("infermesh_telemetry_folded_values_total", "label=\"tenant\""), 1);
  // The autoscaling gauges stay per model whatever the governor folds.
  EXPECT_NE(text.find("infermesh_genai_requests_in_flight{model=\"embed\"}"), std::string::npos);
}

TEST_F(TelemetryTest, FallbacksAndRetriesAreCountedPerServedModel) {
  const int closed = freePort();
  start("{role: sidecar}",
        doc("Model", "down", "{endpoints: [{address: '127.0.0.1:" + std::to_string(closed) + "'}]}") +
            doc("Model", "flaky",
                "{upstreamModel: chat, loadBalancer: {policy: round_robin}, outlierDetection: {consecutiveFailures: 0}, "
                "endpoints: [{address: '127.0.0.1:" + std::to_string(closed) + "'}, {address: '" + engine.address() + "'}]}") +
            doc("Route", "fallback", "{order: 1, match: {pathPrefix: /v1/, headers: [{name: x-fallback}]}, model: down, "
                                     "fallbacks: [{model: chat, on: [connect_failure]}]}") +
            doc("Route", "retry", "{order: 2, match: {pathPrefix: /v1/, headers: [{name: x-retry}]}, model: flaky, "
                                  "retry: {attempts: 2, on: [connect_failure]}}"));
  ASSERT_EQ(send("/v1/chat/completions", chatBody("chat", false), {{"x-fallback", "1"}}).status, 200);
  EXPECT_EQ(metricReaching("infermesh_genai_fallbacks_total", "model=\"chat\",tenant=\"team-a\",route=\"fallback\"", 1), 1);
  EXPECT_EQ(metric("infermesh_genai_retries_total", "route=\"fallback\""), 0);
  // Round robin over a dead and a live endpoint: of two requests, one
  // tries the dead one first and is retried on the other.
  for (int i = 0; i < 2; ++i) ASSERT_EQ(send("/v1/chat/completions", chatBody("chat", false), {{"x-retry", "1"}}).status, 200);
  EXPECT_EQ(metricReaching("infermesh_genai_retries_total", "model=\"flaky\",tenant=\"team-a\",route=\"retry\"", 1), 1);
  EXPECT_EQ(metric("infermesh_genai_fallbacks_total", "route=\"retry\""), 0);
  // The access log says how each was routed.
  std::string log;
  ASSERT_TRUE(eventually([&] {
    std::ifstream in(dir.path() + "/access.log");
    log.assign(std::istreambuf_iterator<char>(in), {});
    return std::count(log.begin(), log.end(), '\n') >= 3;
  }));
  EXPECT_NE(log.find("\"routing\":\"fallback\",\"fallbacks\":1"), std::string::npos) << log;
  EXPECT_NE(log.find("\"routing\":\"pinned\",\"fallbacks\":0"), std::string::npos) << log;
}

TEST_F(TelemetryTest, RequestsWaitingForAModelAreAGauge) {
  Mock slow = startMock("telemetry-slow", {"--models", "slow", "--chunks", "20", "--chunk-delay-ms", "50"});
  start("{role: sidecar}",
        doc("Model", "slow", "{endpoints: [{address: '" + slow.address() +
                                 "'}], circuitBreakers: {maxRequests: 1, maxPendingRequests: 4, maxQueueTime: 10s}}"));
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 3; ++i)
    clients.emplace_back([&] { ok += send("/v1/chat/completions", chatBody("slow", true)).status == 200; });
  // One streams, two wait for its slot.
  EXPECT_EQ(metricReaching("infermesh_genai_requests_queued", "model=\"slow\"", 2), 2);
  for (auto& c : clients) c.join();
  EXPECT_EQ(ok, 3);
  EXPECT_EQ(metric("infermesh_genai_requests_queued", "model=\"slow\""), 0);
  EXPECT_EQ(metric("infermesh_genai_requests_queued", "model=\"chat\""), 0);
  EXPECT_EQ(metricReaching("infermesh_genai_queue_seconds_count", "model=\"slow\"", 3), 3);
  EXPECT_GT(metric("infermesh_genai_queue_seconds_sum", "model=\"slow\""), 0.5);  // two waited a whole stream or more
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
