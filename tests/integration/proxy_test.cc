// The proxy as a user runs it: real processes on loopback.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "tests/integration/proxy_fixture.h"

namespace infermesh::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

bool isOpenAiError(const HttpResponse& r, const std::string& code) {
  return r.headers.count("content-type") && r.headers.at("content-type") == "application/json" &&
         r.body.find("{\"error\":{\"message\":") == 0 && r.body.find("\"code\":\"" + code + "\"") != std::string::npos;
}

TEST_F(ProxyTest, NonStreamingChatThroughTheProxy) {
  startProxy(baseConfig());
  auto r = chat("chat-model");
  ASSERT_EQ(r.status, 200) << r.error << r.body;
  EXPECT_NE(r.body.find("\"object\":\"chat.completion\""), std::string::npos);
  EXPECT_NE(r.body.find("\"usage\":{\"prompt_tokens\""), std::string::npos);
  EXPECT_EQ(r.headers["x-request-id"].size(), 32u);
  // An alias is rewritten to the model's name before it reaches the backend.
  r = chat("chat-alias");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("\"model\":\"chat-model\""), std::string::npos);
  // A client's request id is kept and echoed.
  r = httpRequest(port, "POST", "/v1/chat/completions", chatBody("chat-model", false), {{"x-request-id", "abc-123"}});
  EXPECT_EQ(r.headers["x-request-id"], "abc-123");
  EXPECT_EQ(metricReaching("infermesh_http_requests_total", "route=\"api\",model=\"chat-model\",status_class=\"2xx\"", 3),
            3);
}

TEST_F(ProxyTest, ForwardedHeaders) {
  startProxy(baseConfig());
  auto r = httpRequest(port, "GET", "/mock/echo", "",
                       {{"connection", "keep-alive, x-secret-hop"},
                        {"keep-alive", "timeout=5"},
                        {"te", "trailers"},
                        {"x-secret-hop", "1"},
                        {"x-forwarded-for", "10.1.2.3"},
                        {"x-app", "kept"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("\"x-app\":\"kept\""), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\"x-forwarded-for\":\"10.1.2.3, 127.0.0.1\""), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("\"x-request-id\":\"" + r.headers["x-request-id"] + "\""), std::string::npos) << r.body;
  for (const char* hop : {"\"keep-alive\"", "\"te\"", "\"x-secret-hop\""})
    EXPECT_EQ(r.body.find(hop), std::string::npos) << hop << " was forwarded: " << r.body;
}

TEST_F(ProxyTest, StreamingChunksArriveAsTheyAreProduced) {
  startProxy(baseConfig());
  HttpConnection c(port);
  const std::string body = R"({"model":"slow-model","stream":true,"stream_options":{"include_usage":true},"messages":[]})";
  c.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: " +
            std::to_string(body.size()) + "\r\n\r\n" + body);
  // The mock sends 6 events 150 ms apart. Each must reach the client on its
  // own, before the mock has produced the next one.
  std::vector<Clock::time_point> arrivals;
  std::string all;
  const auto deadline = Clock::now() + 10s;
  while (Clock::now() < deadline && all.find("\r\n0\r\n\r\n") == std::string::npos) {
    std::string got = c.readSome(2s);
    if (got.empty()) break;
    for (std::size_t at = 0; (at = got.find("chat.completion.chunk", at)) != std::string::npos; ++at)
      arrivals.push_back(Clock::now());
    all += got;
  }
  ASSERT_NE(all.find("data: [DONE]"), std::string::npos) << all;
  EXPECT_NE(all.find("transfer-encoding: chunked"), std::string::npos);
  EXPECT_NE(all.find("\"usage\":{"), std::string::npos);
  ASSERT_GE(arrivals.size(), 6u);
  for (std::size_t i = 1; i < 6; ++i)
    EXPECT_GE(arrivals[i] - arrivals[i - 1], 75ms) << "event " << i << " was held back and sent with the previous one";
  EXPECT_NE(all.find("\r\n0\r\n\r\n"), std::string::npos);  // a clean chunked end
}

TEST_F(ProxyTest, UpstreamConnectionsAreKeptAlive) {
  startProxy(baseConfig(), /*workers=*/1);
  const int before = mockConnections(fast_a) + mockConnections(fast_b);
  HttpConnection c(port);
  for (int i = 0; i < 20; ++i) {
    const std::string body = chatBody("chat-model", false);
    c.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: " + std::to_string(body.size()) +
              "\r\n\r\n" + body);
    auto r = c.read();
    ASSERT_EQ(r.status, 200) << r.error;
  }
  const int after = mockConnections(fast_a) + mockConnections(fast_b);
  // One pooled connection per endpoint; the two stats calls above add 2.
  EXPECT_EQ(after - before - 2, 2);
  EXPECT_GE(metric("infermesh_upstream_connections_reused_total"), 18);
}

TEST_F(ProxyTest, MalformedAndOversizedRequestsGetTheir4xxAndTheProxyKeepsServing) {
  startProxy(baseConfig());
  struct Case {
    std::string name;
    std::string raw;
    int status;
  };
  const std::string big_header(70 * 1024, 'a');
  const std::vector<Case> cases = {
      {"garbage", "HELLO\r\n\r\n", 400},
      {"bad version", "GET / HTTP/9.9\r\n\r\n", 400},
      {"oversized headers", "GET /v1/models HTTP/1.1\r\nx-big: " + big_header + "\r\n\r\n", 431},
      {"oversized body", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2000000\r\n\r\n", 413},
      {"CL and TE", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", 400},
      {"differing CLs", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nabcdef", 400},
      {"TE not chunked", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n", 400},
      {"bad chunk size", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400},
      {"invalid json", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 9\r\n\r\n{\"model\":", 400},
      {"missing model", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}", 400},
      {"unknown model", "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 15\r\n\r\n{\"model\":\"zzz\"}", 404},
      {"no route", "GET /other HTTP/1.1\r\nhost: x\r\n\r\n", 404},
  };
  for (const auto& c : cases) {
    HttpConnection conn(port);
    conn.sendRaw(c.raw);
    auto r = conn.read(5s);
    EXPECT_EQ(r.status, c.status) << c.name << ": " << r.error;
    EXPECT_NE(r.body.find("{\"error\":"), std::string::npos) << c.name;
  }
  // Incomplete request head: 408 after the header timeout.
  {
    HttpConnection conn(port);
    conn.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n");
    EXPECT_EQ(conn.read(5s).status, 408);
  }
  // Body slower than the body timeout: 408.
  {
    HttpConnection conn(port);
    conn.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"model\"");
    EXPECT_EQ(conn.read(5s).status, 408);
  }
  EXPECT_EQ(chat("chat-model").status, 200);
  EXPECT_GE(metric("infermesh_downstream_errors_total", "reason=\"bad_request\""), 5);
  EXPECT_EQ(metric("infermesh_downstream_errors_total", "reason=\"header_too_large\""), 1);
  EXPECT_EQ(metric("infermesh_downstream_errors_total", "reason=\"body_too_large\""), 1);
  EXPECT_EQ(metric("infermesh_downstream_errors_total", "reason=\"timeout\""), 2);
}

TEST_F(ProxyTest, PipelinedRequestsAreAnsweredInOrder) {
  startProxy(baseConfig());
  HttpConnection c(port);
  std::string raw;
  for (const char* model : {"chat-model", "zzz", "chat-alias"}) {
    const std::string body = R"({"model":")" + std::string(model) + R"("})";
    raw += "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body;
  }
  c.sendRaw(raw);
  EXPECT_EQ(c.read().status, 200);
  EXPECT_EQ(c.read().status, 404);
  auto third = c.read();
  EXPECT_EQ(third.status, 200);
  EXPECT_NE(third.body.find("chat.completion"), std::string::npos);
}

TEST_F(ProxyTest, ExpectContinueAndChunkedRequestBodies) {
  startProxy(baseConfig());
  HttpConnection c(port);
  const std::string body = chatBody("chat-model", false);
  c.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: " +
            std::to_string(body.size()) + "\r\n\r\n");
  EXPECT_EQ(c.readSome(3s).rfind("HTTP/1.1 100 Continue\r\n\r\n", 0), 0u);
  c.sendRaw(body);
  EXPECT_EQ(c.read().status, 200);
  // A chunked request body, split mid-JSON.
  c.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"mod\r\n" +
            [] {
              std::string rest = R"(el":"chat-model"})";
              char size[8];
              std::snprintf(size, sizeof size, "%zx", rest.size());
              return std::string(size) + "\r\n" + rest + "\r\n0\r\n\r\n";
            }());
  EXPECT_EQ(c.read().status, 200);
}

TEST_F(ProxyTest, UpstreamDownGives503InOpenAiShapeAndRetriesAnotherEndpoint) {
  startProxy(baseConfig());
  auto r = chat("dead-model");
  EXPECT_EQ(r.status, 503);
  EXPECT_TRUE(isOpenAiError(r, "upstream_unavailable")) << r.body;
  // One endpoint refuses connections: every request still succeeds.
  for (int i = 0; i < 6; ++i) EXPECT_EQ(chat("half-dead-model").status, 200);
  EXPECT_GE(metric("infermesh_upstream_errors_total", "reason=\"connect_failure\""), 4);
  EXPECT_GE(metric("infermesh_upstream_retries_total"), 3);
}

TEST_F(ProxyTest, InvalidUpstreamResponseGives502) {
  // A backend that answers with something that is not HTTP.
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  ::listen(listener, 8);
  std::thread garbage([listener] {
    int c = ::accept(listener, nullptr, nullptr);
    if (c < 0) return;
    char buf[4096];
    (void)::recv(c, buf, sizeof buf, 0);
    const char reply[] = "SSH-2.0-not-http\r\n\r\n";
    (void)::send(c, reply, sizeof reply - 1, MSG_NOSIGNAL);
    ::close(c);
  });
  startProxy(baseConfig() + "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: garbage-model}\n"
                            "spec: {endpoints: [{address: '127.0.0.1:" + std::to_string(ntohs(addr.sin_port)) + "'}]}\n");
  auto r = chat("garbage-model");
  garbage.join();
  ::close(listener);
  EXPECT_EQ(r.status, 502);
  EXPECT_TRUE(isOpenAiError(r, "upstream_protocol_error")) << r.body;
  EXPECT_EQ(metric("infermesh_upstream_errors_total", "reason=\"protocol_error\""), 1);
}

TEST_F(ProxyTest, OutlierDetectionEjectsAFailingEndpoint) {
  startProxy(baseConfig());
  // One connect failure ejects the dead endpoint for 60 s; later requests
  // go straight to the live one.
  for (int i = 0; i < 8; ++i) EXPECT_EQ(chat("ejecting-model").status, 200);
  EXPECT_EQ(metric("infermesh_upstream_errors_total", "reason=\"connect_failure\""), 1);
  EXPECT_EQ(metric("infermesh_upstream_ejections_total"), 1);
}

TEST_F(ProxyTest, RateLimitedEndpointRestsForRetryAfter) {
  startProxy(baseConfig());
  // One endpoint answers 429 with retry-after: 30. The client sees that
  // 429 (fallbacks are not built yet), but the endpoint then rests and
  // every later request goes to the other one.
  int limited_answers = 0;
  for (int i = 0; i < 12; ++i) {
    auto r = chat("limited-model");
    if (r.status == 429) {
      ++limited_answers;
      EXPECT_EQ(r.headers["retry-after"], "30");
    } else {
      EXPECT_EQ(r.status, 200);
    }
  }
  EXPECT_LE(limited_answers, 1);
}

TEST_F(ProxyTest, FallbacksTakeOverOnTheirTriggers) {
  startProxy(baseConfig());
  auto via = [&](const std::string& which) {
    return httpRequest(port, "POST", "/v1/chat/completions", chatBody("chat-model", false),
                       {{"x-test-fallback", which}});
  };
  // 429 from the route's model: the fallback answers, with its own name in
  // the forwarded body.
  auto r = via("429");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.headers["x-mock-server"], "limited");
  EXPECT_NE(r.body.find("\"model\":\"chat-model\""), std::string::npos);
  // No endpoint reachable: the fallback answers.
  EXPECT_EQ(via("dead").status, 200);
  // No first token in time: the fallback answers, well before the 3 s.
  const auto start = Clock::now();
  r = via("slow");
  EXPECT_EQ(r.status, 200);
  EXPECT_LT(Clock::now() - start, 2000ms);
  // The forwarded body named the fallback (not sluggish-model, the first
  // model's upstream name).
  EXPECT_NE(r.body.find("\"model\":\"chat-model\""), std::string::npos) << r.body;
  // A failure the fallback does not name goes to the client as it is.
  r = via("5xx-only");
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.headers["retry-after"], "30");
  EXPECT_EQ(metric("infermesh_upstream_fallbacks_total"), 3);
  EXPECT_EQ(metricReaching("infermesh_http_requests_total", "route=\"fallback-429\",model=\"chat-model\",status_class=\"2xx\"", 1),
            1);
}

TEST_F(ProxyTest, LeastRequestAvoidsABusyEndpoint) {
  startProxy(baseConfig());
  // Park one request on the endpoint that takes 3 s (retry until one lands
  // there; the others come back at once from the fast one).
  std::vector<std::unique_ptr<HttpConnection>> parked;
  const std::string body = chatBody("mixed-model", false);
  const std::string raw = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: " +
                          std::to_string(body.size()) + "\r\n\r\n" + body;
  for (int i = 0; i < 20 && parked.empty(); ++i) {
    auto c = std::make_unique<HttpConnection>(port);
    c->sendRaw(raw);
    if (c->readSome(150ms).empty()) parked.push_back(std::move(c));
  }
  ASSERT_EQ(parked.size(), 1u) << "no request reached the slow endpoint";
  // With one request in flight there, every new one goes to the idle endpoint.
  for (int i = 0; i < 10; ++i) {
    auto r = chat("mixed-model");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.headers["x-mock-server"], "fast-a");
  }
}

TEST_F(ProxyTest, UpstreamTimeoutGives504) {
  startProxy(baseConfig());
  const auto start = Clock::now();
  auto r = chat("sluggish-model");
  EXPECT_EQ(r.status, 504);
  EXPECT_TRUE(isOpenAiError(r, "upstream_timeout")) << r.body;
  EXPECT_LT(Clock::now() - start, 2500ms);  // the route's 300ms idle timeout, not the mock's 3s
}

TEST_F(ProxyTest, RouteRequestTimeoutEndsALongStream) {
  startProxy(baseConfig());
  // slow-model streams for ~750 ms; the route allows 450 ms in all.
  const auto start = Clock::now();
  auto r = httpRequest(port, "POST", "/v1/chat/completions", chatBody("slow-model", true), {{"x-test-deadline", "1"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.complete) << "a stream cut by the deadline was presented as complete";
  EXPECT_LT(Clock::now() - start, 700ms);
  EXPECT_EQ(metric("infermesh_upstream_errors_total", "reason=\"timeout\""), 1);
  // Without the header the same stream completes: no default overall timeout.
  auto full = chat("slow-model", true);
  EXPECT_TRUE(full.complete);
  EXPECT_NE(full.body.find("[DONE]"), std::string::npos);
}

TEST_F(ProxyTest, FirstTokenTimeout) {
  startProxy(baseConfig());
  // sluggish-patient takes 3 s to the first token; the route allows 300 ms.
  const auto start = Clock::now();
  auto r = httpRequest(port, "POST", "/v1/chat/completions", chatBody("sluggish-patient", false), {{"x-test-ttft", "1"}});
  EXPECT_EQ(r.status, 504);
  EXPECT_TRUE(isOpenAiError(r, "upstream_first_token_timeout")) << r.body;
  // Streaming: the head came at once, then no token. The head was held
  // until the first byte, so the client gets the timeout as an error
  // response, not a stream that starts and breaks.
  r = httpRequest(port, "POST", "/v1/chat/completions", chatBody("sluggish-patient", true), {{"x-test-ttft", "1"}});
  EXPECT_EQ(r.status, 504);
  EXPECT_TRUE(isOpenAiError(r, "upstream_first_token_timeout")) << r.body;
  EXPECT_LT(Clock::now() - start, 2500ms);
}

TEST_F(ProxyTest, UpstreamResetMidStreamIsNeverACleanEnd) {
  startProxy(baseConfig());
  auto r = chat("flaky-model", /*stream=*/true);
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.complete) << "a truncated stream was presented as complete";
  EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);
  EXPECT_NE(r.body.find("event: error\ndata: {\"error\":"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("upstream_reset_mid_stream"), std::string::npos);
  EXPECT_EQ(metric("infermesh_streams_aborted_total"), 1);
  EXPECT_EQ(chat("chat-model").status, 200);
}

TEST_F(ProxyTest, ClientLeavingCancelsTheUpstreamExchange) {
  startProxy(baseConfig());
  {
    // The backend takes 3 s to answer; the client gives up after 200 ms.
    HttpConnection c(port);
    const std::string body = chatBody("sluggish-patient", true);
    c.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: " + std::to_string(body.size()) +
              "\r\n\r\n" + body);
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(metric("infermesh_upstream_connections_active"), 1);
  }
  bool cancelled = false;
  for (int i = 0; i < 50 && !cancelled; ++i) {  // well before the backend's 3 s
    cancelled = metric("infermesh_upstream_connections_active") == 0;
    if (!cancelled) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(cancelled) << "the upstream exchange outlived its client";
  EXPECT_EQ(metric("infermesh_downstream_disconnects_total"), 1);
  EXPECT_EQ(metric("infermesh_upstream_errors_total"), 0);
  EXPECT_EQ(chat("chat-model").status, 200);
}

TEST_F(ProxyTest, SighupAppliesNewConfigWhileAStreamFinishesOnTheOld) {
  startProxy(baseConfig());
  EXPECT_EQ(chat("renamed").status, 404);
  HttpConnection c(port);
  const std::string body = chatBody("slow-model", true);
  c.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: " + std::to_string(body.size()) +
            "\r\n\r\n" + body);
  EXPECT_NE(c.readSome(3s).find("HTTP/1.1 200"), std::string::npos);
  // New config: slow-model is gone, chat-model gained an alias.
  std::string next = baseConfig();
  next.replace(next.find("metadata: {name: slow-model}"), 28, "metadata: {name: slow-gone}");
  next.replace(next.find("aliases: [chat-alias]"), 21, "aliases: [chat-alias, renamed]");
  dir.write("config.yaml", next);
  proxy->signal(SIGHUP);
  bool applied = false;
  for (int i = 0; i < 100 && !applied; ++i) {
    applied = metric("infermesh_config_version") == 2;
    if (!applied) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(applied);
  EXPECT_EQ(chat("renamed").status, 200);
  EXPECT_EQ(chat("slow-model").status, 404);
  // The stream that started before the reload completes normally.
  auto rest = c.read(10s);
  std::string all;
  for (std::string got; !(got = c.readSome(3s)).empty();) {
    all += got;
    if (all.find("\r\n0\r\n\r\n") != std::string::npos) break;
  }
  EXPECT_NE(all.find("data: [DONE]"), std::string::npos) << all;
  EXPECT_NE(all.find("\r\n0\r\n\r\n"), std::string::npos);
}

TEST_F(ProxyTest, InvalidReloadKeepsTheOldConfig) {
  startProxy(baseConfig());
  dir.write("config.yaml", baseConfig() + "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: bad}\n"
                                          "spec: {model: missing}\n");
  proxy->signal(SIGHUP);
  bool counted = false;
  for (int i = 0; i < 100 && !counted; ++i) {
    counted = metric("infermesh_config_reloads_total", "result=\"error\"") == 1;
    if (!counted) std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(counted);
  EXPECT_EQ(metric("infermesh_config_version"), 1);
  EXPECT_EQ(chat("chat-model").status, 200);
  const std::string dump = httpGetBody(admin, "/config_dump");
  EXPECT_NE(dump.find("Route/bad: spec.model: model \\\"missing\\\" is not defined"), std::string::npos) << dump;
}

TEST_F(ProxyTest, SigtermDrainsInFlightStreamsAndExitsZero) {
  startProxy(baseConfig());
  HttpConnection c(port);
  const std::string body = chatBody("slow-model", true);
  c.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: " + std::to_string(body.size()) +
            "\r\n\r\n" + body);
  std::string all = c.readSome(3s);
  ASSERT_NE(all.find("HTTP/1.1 200"), std::string::npos);
  HttpConnection idle(port);  // an idle keep-alive connection is closed at once
  std::this_thread::sleep_for(50ms);
  proxy->signal(SIGTERM);
  EXPECT_TRUE(idle.closedByPeer(2s));
  for (std::string got; !(got = c.readSome(3s)).empty();) all += got;
  EXPECT_NE(all.find("data: [DONE]"), std::string::npos) << all;
  EXPECT_NE(all.find("\r\n0\r\n\r\n"), std::string::npos);
  EXPECT_EQ(proxy->wait(10s), 0);
  EXPECT_FALSE(HttpConnection(port).connected());
}

TEST_F(ProxyTest, AdminEndpoints) {
  startProxy(baseConfig());
  EXPECT_EQ(httpRequest(admin, "GET", "/healthz").status, 200);
  EXPECT_EQ(httpRequest(admin, "GET", "/ready").status, 200);
  auto dump = httpRequest(admin, "GET", "/config_dump");
  EXPECT_EQ(dump.status, 200);
  EXPECT_NE(dump.body.find("\"chat-model\""), std::string::npos);
  auto listeners = httpRequest(admin, "GET", "/listeners");
  EXPECT_NE(listeners.body.find(":" + std::to_string(port)), std::string::npos);
  EXPECT_EQ(httpRequest(admin, "GET", "/nope").status, 404);
}

TEST_F(ProxyTest, AccessLogWritesJsonLines) {
  startProxy(baseConfig("  accessLog: {path: " + dir.path() + "/access.log}\n"));
  ASSERT_EQ(chat("chat-model").status, 200);
  std::string log;
  for (int i = 0; i < 100 && log.find('\n') == std::string::npos; ++i) {
    std::this_thread::sleep_for(20ms);
    std::ifstream in(dir.path() + "/access.log");
    log.assign(std::istreambuf_iterator<char>(in), {});
  }
  EXPECT_NE(log.find("\"status\":200"), std::string::npos) << log;
  EXPECT_NE(log.find("\"model\":\"chat-model\""), std::string::npos);
  EXPECT_NE(log.find("\"route\":\"api\""), std::string::npos);
}

}  // namespace
}  // namespace infermesh::testing
