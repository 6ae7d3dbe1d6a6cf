// Inference-aware routing and resilience, end to end: the proxy and mock
// model servers as real processes on loopback.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include "tests/integration/proxy_fixture.h"

namespace infermesh::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

class RoutingTest : public ProxyTest {
 protected:
  // Lets every client send the routing preferences these tests use.
  static constexpr const char* kClientPreferences = "  clientHeaders: [x-infermesh-capability, x-infermesh-regions]\n";
  // A route taking requests that carry `x-case: <name>`.
  static std::string caseRoute(const std::string& name, const std::string& spec_fields) {
    return doc("Route", name, "{order: 10, match: {headers: [{name: x-case, value: " + name + "}]}" +
                                  (spec_fields.empty() ? "" : ", " + spec_fields) + "}");
  }
  HttpResponse send(const std::string& which, const std::string& model = "chat-model",
                    std::map<std::string, std::string> headers = {}, const std::string& body = "") {
    headers["x-case"] = which;
    return httpRequest(port, "POST", "/v1/chat/completions", body.empty() ? chatBody(model, false) : body, headers);
  }
  static std::string endpoint(const Mock& m, const std::string& extra = "") {
    return "{address: '" + m.address() + "'" + (extra.empty() ? "" : ", " + extra) + "}";
  }
};

TEST_F(RoutingTest, AutoPicksTheCapableModelByObjectiveAndSaysWhich) {
  startProxy(baseConfig(kClientPreferences) +
             doc("Model", "premium",
                 "{capabilities: [chat, code], pricing: {inputPer1kTokens: 0.01, outputPer1kTokens: 0.03}, "
                 "upstreamModel: chat-model, endpoints: [" + endpoint(fast_a) + "]}") +
             doc("Model", "budget",
                 "{capabilities: [chat], contextWindow: 40, pricing: {inputPer1kTokens: 0.001, outputPer1kTokens: 0.002}, "
                 "upstreamModel: chat-model, endpoints: [" + endpoint(fast_b) + "]}") +
             doc("Model", "vectors", "{capabilities: [embeddings], upstreamModel: embed-model, endpoints: [" +
                                         endpoint(fast_a) + "]}") +
             caseRoute("auto", "autoSelect: {objective: cheapest, capabilities: [chat, code, embeddings]}"));
  // "model": "auto" -> the cheapest chat model, named in a response header;
  // the backend got its upstream name.
  auto r = send("auto", "auto");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["x-infermesh-model"], "budget");
  EXPECT_EQ(r.headers["x-mock-server"], "fast-b");
  EXPECT_NE(r.body.find("\"model\":\"chat-model\""), std::string::npos) << r.body;
  // A capability header selects among models with that capability.
  r = send("auto", "auto", {{"x-infermesh-capability", "code"}});
  EXPECT_EQ(r.headers["x-infermesh-model"], "premium");
  r = httpRequest(port, "POST", "/v1/embeddings", "{\"model\":\"auto\",\"input\":\"hi\"}",
                  {{"x-case", "auto"}, {"x-infermesh-capability", "embeddings"}});
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["x-infermesh-model"], "vectors");
  // A prompt larger than budget's context window goes to a model it fits.
  const std::string long_prompt = "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"" +
                                  std::string(400, 'x') + "\"}]}";
  r = send("auto", "auto", {}, long_prompt);
  EXPECT_EQ(r.headers["x-infermesh-model"], "premium");
  // No capable model: a clear 404.
  r = send("auto", "auto", {{"x-infermesh-capability", "translation"}});
  EXPECT_EQ(r.status, 404);
  EXPECT_TRUE(hasCode(r, "no_capable_model")) << r.body;
}

TEST_F(RoutingTest, WeightedSplitSendsEachModelItsShare) {
  startProxy(baseConfig() +
             doc("Model", "stable", "{upstreamModel: chat-model, endpoints: [" + endpoint(fast_a) + "]}") +
             doc("Model", "canary", "{upstreamModel: chat-model, endpoints: [" + endpoint(fast_b) + "]}") +
             caseRoute("split", "split: [{model: stable, weight: 80}, {model: canary, weight: 20}]"));
  std::map<std::string, int> count;
  for (int i = 0; i < 200; ++i) {
    auto r = send("split");
    ASSERT_EQ(r.status, 200);
    ++count[r.headers["x-infermesh-model"]];
  }
  // 40 expected; bounds are about four standard deviations wide.
  EXPECT_GT(count["canary"], 17);
  EXPECT_LT(count["canary"], 63);
  EXPECT_EQ(count["stable"] + count["canary"], 200);
}

TEST_F(RoutingTest, ShadowMirrorsNeverDelayOrFailThePrimary) {
  startProxy(baseConfig() + caseRoute("mirror", "model: chat-model, mirrors: [{model: sluggish-model, percent: 100}, "
                                                "{model: dead-model, percent: 100}]"));
  const int before = mockStat(sluggish, "shadow_requests");
  const auto start = Clock::now();
  auto r = send("mirror");
  EXPECT_EQ(r.status, 200);
  // The sluggish shadow takes 3 s; the primary does not wait for it.
  EXPECT_LT(Clock::now() - start, 1500ms);
  EXPECT_TRUE(eventually([&] { return mockStat(sluggish, "shadow_requests") == before + 1; }));
  EXPECT_EQ(metricReaching("infermesh_mirror_requests_total", "model=\"dead-model\",result=\"error\"", 1), 1);
  EXPECT_TRUE(eventually(
      [&] { return metric("infermesh_mirror_requests_total", "model=\"sluggish-model\",result=\"ok\"") == 1; },
      8000ms));
}

TEST_F(RoutingTest, RetriesOnlyWhatIsSafeAndWithinBudget) {
  const std::string model =
      "{upstreamModel: chat-model, loadBalancer: {policy: round_robin}, outlierDetection: {consecutiveFailures: 0}, "
      "endpoints: [" + endpoint(failing) + ", " + endpoint(fast_a) + "]}";
  startProxy(baseConfig() + doc("Model", "half-failing", model) +
             caseRoute("retry-post", "model: half-failing, retry: {attempts: 2, on: ['5xx'], retryNonIdempotent: true}") +
             caseRoute("no-retry-post", "model: half-failing, retry: {attempts: 2, on: ['5xx']}"));
  // A POST that reached the model is retried only when the route says so.
  for (int i = 0; i < 6; ++i) {
    auto r = send("retry-post");
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.headers["x-mock-server"], "fast-a");
  }
  EXPECT_GE(metric("infermesh_upstream_retries_total"), 3);
  int failed = 0;
  for (int i = 0; i < 6; ++i) failed += send("no-retry-post").status == 500;
  EXPECT_EQ(failed, 3);  // round robin: every other one hit the failing endpoint
}

TEST_F(RoutingTest, TheRetryBudgetCapsConcurrentRetries) {
  // Every request fails first on `failing`; its retry then takes 750 ms on
  // `slow`. The budget allows one retry in flight at a time.
  startProxy(baseConfig() +
             doc("Model", "fail-then-slow",
                 "{upstreamModel: chat-model, loadBalancer: {policy: round_robin}, outlierDetection: "
                 "{consecutiveFailures: 0}, endpoints: [" + endpoint(failing) + ", " + endpoint(slow) + "]}") +
             caseRoute("budget", "model: fail-then-slow, retry: {attempts: 1, on: ['5xx'], retryNonIdempotent: true, "
                                 "budgetPercent: 1, minConcurrency: 1, baseBackoff: 1ms, maxBackoff: 1ms}"));
  std::vector<std::thread> clients;
  std::atomic<int> failed{0};
  for (int i = 0; i < 6; ++i)
    clients.emplace_back([&] { failed += send("budget").status == 500; });
  for (auto& t : clients) t.join();
  const double refused = metric("infermesh_requests_shed_total", "reason=\"retry_budget\"");
  EXPECT_GE(refused, 1);
  // Each refused retry is a failure the client saw; every other request
  // was served (directly by `slow`, or by its one retry).
  EXPECT_EQ(failed, refused);
  EXPECT_GE(metric("infermesh_upstream_retries_total"), 1);
}

TEST_F(RoutingTest, ContextLengthErrorsFallBackToALargerModel) {
  startProxy(baseConfig() +
             doc("Model", "short-window", "{upstreamModel: chat-model, endpoints: [" + endpoint(windowed) + "]}") +
             doc("Model", "tiny-window", "{upstreamModel: chat-model, contextWindow: 10, endpoints: [" +
                                             endpoint(windowed) + "]}") +
             caseRoute("ctx", "model: short-window, fallbacks: [{model: chat-model, on: [context_length]}]") +
             caseRoute("ctx-known", "model: tiny-window, fallbacks: [{model: chat-model, on: [context_length]}]") +
             caseRoute("ctx-none", "model: short-window"));
  const std::string long_prompt = "{\"model\":\"x\",\"messages\":[{\"role\":\"user\",\"content\":\"" +
                                  std::string(1000, 'x') + "\"}]}";
  // The model says context_length_exceeded: the fallback answers.
  auto r = send("ctx", "", {}, long_prompt);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["x-infermesh-model"], "chat-model");
  // A short prompt stays on the first model.
  r = send("ctx");
  EXPECT_EQ(r.headers["x-infermesh-model"], "short-window");
  // A configured context window too small for the prompt: not even asked.
  const int asked = mockStat(windowed, "requests");
  r = send("ctx-known", "", {}, long_prompt);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(mockStat(windowed, "requests"), asked);
  // Without a fallback the client gets the model's own 400.
  r = send("ctx-none", "", {}, long_prompt);
  EXPECT_EQ(r.status, 400);
  EXPECT_TRUE(hasCode(r, "context_length_exceeded")) << r.body;
  EXPECT_EQ(metric("infermesh_upstream_fallbacks_total"), 2);
}

TEST_F(RoutingTest, AModelWhoseEndpointsAllRestIsRateLimitedWithoutAsking) {
  startProxy(baseConfig());
  auto r = httpRequest(port, "POST", "/v1/chat/completions", chatBody("always-429", false));
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.headers["retry-after"], "30");
  const int asked = mockStat(limited, "requests");
  r = httpRequest(port, "POST", "/v1/chat/completions", chatBody("always-429", false));
  EXPECT_EQ(r.status, 429);
  EXPECT_TRUE(hasCode(r, "upstream_rate_limited")) << r.body;
  const int retry_after = std::atoi(r.headers["retry-after"].c_str());
  EXPECT_GE(retry_after, 28);
  EXPECT_LE(retry_after, 30);
  EXPECT_EQ(mockStat(limited, "requests"), asked);
}

TEST_F(RoutingTest, CircuitBreakerShedsLowPriorityAndQueuesTheRest) {
  startProxy(baseConfig() +
             doc("Model", "narrow",
                 "{upstreamModel: slow-model, circuitBreakers: {maxRequests: 1, maxPendingRequests: 1, "
                 "maxQueueTime: 5s}, endpoints: [" + endpoint(slow) + "]}") +
             caseRoute("low", "model: narrow, priority: low") + caseRoute("normal", "model: narrow") +
             caseRoute("critical", "model: narrow, priority: critical"));
  // One stream holds the only slot for about a second.
  auto holder = std::thread([&] { EXPECT_EQ(send("normal").status, 200); });
  ASSERT_TRUE(eventually([&] { return mockStat(slow, "requests") >= 1; }));
  std::this_thread::sleep_for(100ms);
  // Low priority is shed at once, with Retry-After.
  const auto start = Clock::now();
  auto r = send("low");
  EXPECT_EQ(r.status, 503);
  EXPECT_TRUE(hasCode(r, "overloaded")) << r.body;
  EXPECT_EQ(r.headers["retry-after"], "1");
  EXPECT_LT(Clock::now() - start, 500ms);
  // A normal request waits its turn; a critical one then takes its place in
  // the full queue, and the normal one is shed.
  HttpResponse waited, displaced;
  auto normal = std::thread([&] { displaced = send("normal"); });
  ASSERT_TRUE(eventually([&] { return metric("infermesh_requests_queued") == 1; }));
  auto critical = std::thread([&] { waited = send("critical"); });
  holder.join();
  normal.join();
  critical.join();
  EXPECT_EQ(displaced.status, 503);
  EXPECT_EQ(waited.status, 200) << waited.body;
  EXPECT_EQ(metric("infermesh_requests_shed_total", "reason=\"max_requests\""), 1);
  EXPECT_EQ(metric("infermesh_requests_shed_total", "reason=\"displaced\""), 1);
}

TEST_F(RoutingTest, ConnectionLimitGivesAFast503WithTheReason) {
  startProxy(baseConfig() +
             doc("Model", "one-conn", "{upstreamModel: slow-model, circuitBreakers: {maxConnections: 1}, endpoints: [" +
                                          endpoint(slow) + "]}") +
             caseRoute("one-conn", "model: one-conn"));
  auto holder = std::thread([&] { EXPECT_EQ(send("one-conn").status, 200); });
  ASSERT_TRUE(eventually([&] { return metric("infermesh_upstream_connections_active") == 1; }));
  const auto start = Clock::now();
  auto r = send("one-conn");
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(r.body.find("max_connections"), std::string::npos) << r.body;
  EXPECT_LT(Clock::now() - start, 300ms);
  holder.join();
  EXPECT_EQ(metric("infermesh_requests_shed_total", "reason=\"max_connections\""), 1);
  EXPECT_EQ(send("one-conn").status, 200);  // the slot is free again
}

TEST_F(RoutingTest, ActiveHealthChecksTakeAnEndpointOutAndBack) {
  httpGetBody(toggled.port, "/mock/health/up");
  startProxy(baseConfig() +
             doc("Model", "checked",
                 "{upstreamModel: chat-model, loadBalancer: {policy: round_robin}, "
                 "healthCheck: {path: /health, interval: 100ms, timeout: 500ms, unhealthyThreshold: 2, "
                 "healthyThreshold: 2}, endpoints: [" + endpoint(toggled) + ", " + endpoint(fast_b) + "]}") +
             caseRoute("checked", "model: checked"));
  httpGetBody(toggled.port, "/mock/health/down");
  ASSERT_TRUE(eventually([&] { return metric("infermesh_endpoints_unhealthy") == 1; }));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(send("checked").headers["x-mock-server"], "fast-b");
  httpGetBody(toggled.port, "/mock/health/up");
  ASSERT_TRUE(eventually([&] { return metric("infermesh_endpoints_unhealthy") == 0; }));
  std::map<std::string, int> seen;
  for (int i = 0; i < 6; ++i) ++seen[send("checked").headers["x-mock-server"]];
  EXPECT_EQ(seen["toggled"], 3);
  EXPECT_GT(metric("infermesh_health_checks_total", "result=\"failed\""), 0);
}

TEST_F(RoutingTest, PolledLoadReportsSteerLoadAwayFromAQueueingEndpoint) {
  // `busy` has one batch slot, taken by a client that is not the proxy, and
  // a second request waiting: only its polled load report can tell.
  auto busy = startMock("busy", {"--models", "chat-model", "--max-concurrency", "1", "--ttft-ms", "1500"});
  auto idle = startMock("idle", {"--models", "chat-model"});
  std::vector<std::thread> others;
  for (int i = 0; i < 2; ++i)
    others.emplace_back([&] { httpRequest(busy.port, "POST", "/v1/chat/completions", chatBody("chat-model", false)); });
  ASSERT_TRUE(eventually([&] {
    return httpRequest(busy.port, "GET", "/metrics/orca", "").body.find("num_requests_waiting=1") != std::string::npos;
  }));
  startProxy(baseConfig() +
             doc("Model", "polled",
                 "{upstreamModel: chat-model, loadBalancer: {policy: load_aware}, "
                 "loadReport: {path: /metrics/orca, interval: 50ms}, endpoints: [" + endpoint(busy) + ", " +
                     endpoint(idle) + "]}") +
             caseRoute("polled", "model: polled"));
  // Both endpoints polled a few times.
  ASSERT_TRUE(eventually([&] { return metric("infermesh_load_reports_polled_total", "result=\"ok\"") >= 6; }));
  std::map<std::string, int> seen;
  for (int i = 0; i < 10; ++i) ++seen[send("polled").headers["x-mock-server"]];
  EXPECT_EQ(seen["idle"], 10);
  for (auto& t : others) t.join();
}

TEST_F(RoutingTest, ScaleFromZeroHoldsRequestsUntilAnEndpointIsHealthy) {
  // A port nobody listens on yet: the model is "scaled to zero".
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int cold_port = ntohs(addr.sin_port);
  ::close(fd);
  auto activator = startMock("activator", {});
  startProxy(baseConfig() +
             doc("Model", "cold",
                 "{upstreamModel: chat-model, healthCheck: {path: /health, interval: 100ms, timeout: 200ms}, "
                 "activation: {webhook: 'http://" + activator.address() + "/mock/activate', queueTimeout: 10s}, "
                 "endpoints: [{address: '127.0.0.1:" + std::to_string(cold_port) + "'}]}") +
             doc("Model", "frozen",
                 "{upstreamModel: chat-model, healthCheck: {path: /health, interval: 100ms, timeout: 200ms}, "
                 "activation: {webhook: 'http://" + activator.address() + "/mock/activate', queueTimeout: 300ms}, "
                 "endpoints: [{address: '127.0.0.1:1'}]}") +
             caseRoute("cold", "model: cold") + caseRoute("frozen", "model: frozen"));
  HttpResponse a, b;
  auto first = std::thread([&] { a = send("cold"); });
  auto second = std::thread([&] { b = send("cold"); });
  // One webhook call for the cold start, however many requests wait.
  ASSERT_TRUE(eventually([&] { return mockStat(activator, "activations") == 1; }));
  ASSERT_TRUE(eventually([&] { return metric("infermesh_requests_queued") == 2; }));
  // "Activation": the model server comes up on its port.
  auto woken = startMock("woken", {"--port", std::to_string(cold_port), "--models", "chat-model"});
  first.join();
  second.join();
  EXPECT_EQ(a.status, 200) << a.body;
  EXPECT_EQ(b.status, 200) << b.body;
  EXPECT_EQ(a.headers["x-mock-server"], "woken");
  EXPECT_EQ(mockStat(activator, "activations"), 1);
  // A model that never wakes: 503 with Retry-After once the queue timeout passes.
  auto r = send("frozen");
  EXPECT_EQ(r.status, 503);
  EXPECT_TRUE(hasCode(r, "model_cold")) << r.body;
  EXPECT_FALSE(r.headers["retry-after"].empty());
  EXPECT_EQ(metric("infermesh_requests_shed_total", "reason=\"cold_start_timeout\""), 1);
}

TEST_F(RoutingTest, ResidencyIsNeverSpilledOver) {
  startProxy(baseConfig(kClientPreferences) +
             doc("Model", "global", "{upstreamModel: chat-model, endpoints: [" + endpoint(fast_a, "region: eu-west") +
                                        ", " + endpoint(fast_b, "region: us-east") + "]}") +
             caseRoute("eu-only", "model: global, residency: [eu-west]") + caseRoute("anywhere", "model: global"));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(send("eu-only").headers["x-mock-server"], "fast-a");
  // A request can narrow the regions further, never widen them.
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(send("anywhere", "chat-model", {{"x-infermesh-regions", "us-east"}}).headers["x-mock-server"], "fast-b");
  auto r = send("eu-only", "chat-model", {{"x-infermesh-regions", "us-east"}});
  EXPECT_EQ(r.status, 503);
  EXPECT_TRUE(hasCode(r, "residency_unsatisfiable")) << r.body;
}

TEST_F(RoutingTest, LocalityPrefersTheProxysOwnZone) {
  startProxy(baseConfig() +
                 doc("Model", "zonal",
                     "{upstreamModel: chat-model, locality: {enabled: true}, endpoints: [" +
                         endpoint(fast_a, "region: eu, zone: eu-b") + ", " + endpoint(fast_b, "region: eu, zone: eu-a") +
                         "]}") +
                 caseRoute("zonal", "model: zonal"),
             1, {"--region", "eu", "--zone", "eu-a"});
  for (int i = 0; i < 8; ++i) EXPECT_EQ(send("zonal").headers["x-mock-server"], "fast-b");
}

TEST_F(RoutingTest, ConsistentHashKeepsASessionOnOneEndpoint) {
  startProxy(baseConfig() +
             doc("Model", "sticky",
                 "{upstreamModel: chat-model, loadBalancer: {policy: consistent_hash, hashHeader: x-session-id}, "
                 "endpoints: [" + endpoint(fast_a) + ", " + endpoint(fast_b) + "]}") +
             caseRoute("sticky", "model: sticky"));
  std::map<std::string, int> homes;
  for (int s = 0; s < 16; ++s) {
    const std::string session = "session-" + std::to_string(s);
    const std::string home = send("sticky", "chat-model", {{"x-session-id", session}}).headers["x-mock-server"];
    for (int i = 0; i < 3; ++i)
      EXPECT_EQ(send("sticky", "chat-model", {{"x-session-id", session}}).headers["x-mock-server"], home);
    ++homes[home];
  }
  EXPECT_EQ(homes.size(), 2u) << "sessions spread over both endpoints";
}

TEST_F(RoutingTest, EwmaLearnsToAvoidASlowEndpoint) {
  startProxy(baseConfig() +
             doc("Model", "uneven", "{upstreamModel: chat-model, loadBalancer: {policy: ewma}, endpoints: [" +
                                        endpoint(slow) + ", " + endpoint(fast_a) + "]}") +
             caseRoute("uneven", "model: uneven"));
  int on_slow = 0;
  for (int i = 0; i < 12; ++i) on_slow += send("uneven").headers["x-mock-server"] == "slow";
  EXPECT_LE(on_slow, 1);  // measured once, then avoided
}

}  // namespace
}  // namespace infermesh::testing
