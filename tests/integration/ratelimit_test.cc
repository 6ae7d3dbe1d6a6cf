// Token limits and cost budgets end to end (docs/rate-limits.md): real
// proxies, a real redis-server on a free loopback port, mock model servers
// that stream. Refusals before the model is called, the finish path and
// the usage chunk the proxy asks for, a fleet of proxies sharing one
// global limit under concurrent streams (and with Redis killed and
// restarted), budgets that survive a restart, and the downgrade path.

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <mutex>
#include <sstream>
#include <thread>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/jwt_signer.h"
#include "tests/support/redis_server.h"

namespace infermesh::testing {
namespace {

constexpr const char* kKeyA = "sk-team-a-limits-0001";
constexpr const char* kKeyA2 = "sk-team-a-limits-0002";
constexpr const char* kKeyB = "sk-team-b-limits-0001";

// A proxy of the fleet under test.
struct Node {
  TempDir dir;
  std::unique_ptr<Process> process;
  int port = 0;
  int admin = 0;
};

// The numbers of one SSE answer: its usage chunk, its events, how it ended.
struct StreamSummary {
  int content_events = 0;
  long prompt_tokens = -1, completion_tokens = -1;
  bool done = false;  // data: [DONE]
  std::string finish_reason;
  std::string finished_by;  // the infermesh event's limit
};

long numberAfter(const std::string& s, const std::string& key) {
  const auto at = s.find("\"" + key + "\":");
  return at == std::string::npos ? -1 : std::atol(s.c_str() + at + key.size() + 3);
}

StreamSummary summarize(const std::string& body) {
  StreamSummary s;
  std::istringstream in(body);
  for (std::string line; std::getline(in, line);) {
    if (!line.starts_with("data: ")) continue;
    const std::string data = line.substr(6);
    if (data == "[DONE]") {
      s.done = true;
      continue;
    }
    if (data.find("\"content\":") != std::string::npos) ++s.content_events;
    if (data.find("\"usage\":{") != std::string::npos) {
      s.prompt_tokens = numberAfter(data, "prompt_tokens");
      s.completion_tokens = numberAfter(data, "completion_tokens");
    }
    const auto fr = data.find("\"finish_reason\":\"");
    if (fr != std::string::npos) s.finish_reason = data.substr(fr + 17, data.find('"', fr + 17) - fr - 17);
    const auto by = data.find("\"limit\":\"");
    if (data.find("\"finished_by\"") != std::string::npos && by != std::string::npos)
      s.finished_by = data.substr(by + 9, data.find('"', by + 9) - by - 9);
  }
  return s;
}

// An engine speaking Anthropic's Messages stream: message_start, one text
// block of `deltas` content_block_delta events, message_delta, message_stop.
// One connection at a time; stops writing when the proxy goes away.
class AnthropicStreamUpstream {
 public:
  explicit AnthropicStreamUpstream(int deltas) : deltas_(deltas) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(fd_, 8);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~AnthropicStreamUpstream() {
    stopping_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  void serve() {
    while (!stopping_) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string in;
      char buf[4096];
      // The head, then a body of its content-length.
      for (;;) {
        const auto end = in.find("\r\n\r\n");
        if (end != std::string::npos) {
          const auto cl = in.find("content-length: ");
          const std::size_t need = cl == std::string::npos ? 0 : std::stoul(in.substr(cl + 16));
          if (in.size() >= end + 4 + need) break;
        }
        const auto n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        in.append(buf, static_cast<std::size_t>(n));
      }
      auto chunk = [&](const std::string& data) {
        char size[16];
        std::snprintf(size, sizeof size, "%zx\r\n", data.size());
        const std::string out = size + data + "\r\n";
        return ::send(c, out.data(), out.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(out.size());
      };
      const std::string head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
      bool ok = ::send(c, head.data(), head.size(), MSG_NOSIGNAL) > 0 &&
                chunk("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":"
                      "\"message\",\"role\":\"assistant\",\"model\":\"chat\",\"content\":[],\"stop_reason\":null,"
                      "\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n"
                      "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
                      "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
      for (int i = 0; ok && i < deltas_; ++i) {
        ok = chunk("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
                   "\"delta\":{\"type\":\"text_delta\",\"text\":\"word \"}}\n\n");
        // An engine's pace, not a wait: events arrive over many reads, as
        // generated tokens do, so the end of the message is never in the
        // read that crosses the limit.
        std::this_thread::sleep_for(std::chrono::microseconds(500));
      }
      if (ok)
        ok = chunk("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
                   "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},"
                   "\"usage\":{\"output_tokens\":" + std::to_string(deltas_) + "}}\n\n"
                   "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") &&
             ::send(c, "0\r\n\r\n", 5, MSG_NOSIGNAL) == 5;
      ::close(c);
    }
  }

  int deltas_;
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

class RateLimitTest : public ProxyTest {
 protected:
  static void SetUpTestSuite() {
    bin_dir = binariesDir();
    // 40 tokens per stream (one per event), quickly.
    streamer = startMock("rl-stream", {"--models", "chat,cheap,premium", "--chunks", "40", "--chunk-delay-ms", "2"});
    // Streams far longer than any reservation.
    longer = startMock("rl-long", {"--models", "chat", "--chunks", "400", "--chunk-delay-ms", "1"});
  }
  static void TearDownTestSuite() {
    streamer.process.reset();
    longer.process.reset();
  }
  static inline Mock streamer, longer;

  // The mesh's config: authn + authz + ratelimit + router, two tenants by
  // API key, `tenant_a` and `route` spec lines added as given.
  std::string config(const std::string& ratelimit_config, const std::string& tenant_a,
                     const std::string& route = "", const std::string& endpoint = "") const {
    const std::string ep = endpoint.empty() ? streamer.address() : endpoint;
    std::ostringstream y;
    y << "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec:\n"
      << "  address: 127.0.0.1:0\n"
      << "  filters: [{name: authn}, {name: authz}, {name: ratelimit, config: " << ratelimit_config
      << "}, {name: router}]\n"
      << doc("Model", "chat",
             "{endpoints: [{address: '" + ep + "'}], pricing: {inputPer1kTokens: 1.0, outputPer1kTokens: 2.0}}")
      << doc("Model", "premium",
             "{endpoints: [{address: '" + ep + "'}], pricing: {inputPer1kTokens: 10.0, outputPer1kTokens: 30.0}}")
      << doc("Model", "cheap",
             "{endpoints: [{address: '" + ep + "'}], pricing: {inputPer1kTokens: 0.0, outputPer1kTokens: 0.0}}")
      << doc("Route", "v1", "{match: {pathPrefix: /v1/}" + route + "}")
      << doc("Tenant", "team-a",
             "{apiKeys: [{name: ci, sha256: " + sha256Hex(kKeyA) + "}, {name: batch, sha256: " + sha256Hex(kKeyA2) +
                 "}]" + tenant_a + "}")
      << doc("Tenant", "team-b", "{apiKeys: [{name: ci, sha256: " + sha256Hex(kKeyB) + "}]}")
      << doc("Policy", "main", "{listeners: [main], defaultAction: deny, rules: [{name: tenants, action: allow, "
                               "tenants: [team-a, team-b]}]}");
    return y.str();
  }

  std::unique_ptr<Node> startNode(const std::string& yaml, int workers = 1) {
    auto n = std::make_unique<Node>();
    n->dir.write("config.yaml", yaml);
    n->process = Process::start({bin_dir + "/proxy/infermesh-proxy", "--config", n->dir.path(), "--admin", "127.0.0.1:0",
                                 "--workers", std::to_string(workers), "--drain-timeout", "5"},
                                n->dir.path() + "/proxy.log");
    n->port = portOf(n->process->waitForLine("listener main "));
    n->admin = portOf(n->process->waitForLine("admin "));
    EXPECT_GT(n->port, 0) << "proxy did not start; see " << n->dir.path() << "/proxy.log";
    return n;
  }
  void useNode(const Node& n) {
    port = n.port;
    admin = n.admin;
  }

  static std::string body(const std::string& model, bool stream, int max_tokens = -1, bool include_usage = false) {
    std::string b = "{\"model\":\"" + model + "\",\"messages\":[{\"role\":\"user\",\"content\":\"Count to forty for me.\"}]";
    if (stream) b += ",\"stream\":true";
    if (include_usage) b += ",\"stream_options\":{\"include_usage\":true}";
    if (max_tokens >= 0) b += ",\"max_tokens\":" + std::to_string(max_tokens);
    return b + "}";
  }
  static HttpResponse call(int port, const std::string& key, const std::string& body_json) {
    return httpRequest(port, "POST", "/v1/chat/completions", body_json,
                       {{"content-type", "application/json"}, {"authorization", std::string("Bearer ") + key}},
                       std::chrono::seconds(20));
  }
};

TEST_F(RateLimitTest, RefusesBeforeTheModelWithOpenAiHeaders) {
  // 200 tokens a minute; each request reserves its input + max_tokens 40.
  startProxy(config("{}", ", limits: [{name: tpm, tokensPerMinute: 200}]"));
  const int before = mockStat(streamer, "requests");
  auto r = call(port, kKeyA, body("chat", false, 40));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["x-ratelimit-limit-tokens"], "200");
  const long left = std::atol(r.headers["x-ratelimit-remaining-tokens"].c_str());
  EXPECT_GT(left, 0);
  EXPECT_LT(left, 200);
  EXPECT_FALSE(r.headers["x-ratelimit-reset-tokens"].empty());
  int admitted = 1;
  for (; admitted < 10; ++admitted) {
    r = call(port, kKeyA, body("chat", false, 40));
    if (r.status != 200) break;
  }
  ASSERT_EQ(r.status, 429) << r.body;
  EXPECT_TRUE(hasCode(r, "rate_limit_exceeded")) << r.body;
  EXPECT_NE(r.body.find("Tenant/team-a/tpm"), std::string::npos) << r.body;
  EXPECT_GE(std::atoi(r.headers["retry-after"].c_str()), 1);
  EXPECT_EQ(r.headers["x-ratelimit-remaining-tokens"].empty(), false);
  EXPECT_LE(admitted, 4);  // ~50 tokens each against 200
  // The refused request never reached the model.
  EXPECT_EQ(mockStat(streamer, "requests") - before, admitted);
  EXPECT_EQ(metric("infermesh_ratelimit_refused_total", "limit=\"Tenant/team-a/tpm\""), 1);
  EXPECT_EQ(metric("infermesh_ratelimit_admitted_total", "limit=\"Tenant/team-a/tpm\""), admitted);
  // Another tenant has its own counter.
  EXPECT_EQ(call(port, kKeyB, body("chat", false, 40)).status, 200);
}

TEST_F(RateLimitTest, SettlesToTheReportedUsage) {
  // max_tokens 1000 reserves far more than the ~50 tokens each exchange uses:
  // settlement gives the difference back, so the next request fits.
  startProxy(config("{}", ", limits: [{name: tpm, tokensPerMinute: 1300}]"));
  for (int i = 0; i < 5; ++i) {
    auto r = call(port, kKeyA, body("chat", false, 1000));
    ASSERT_EQ(r.status, 200) << i << " " << r.body;
    // A stream settles just after its last byte went out: wait for it.
    ASSERT_TRUE(eventually([&] { return metric("infermesh_ratelimit_settled_tokens_total", "Tenant/team-a/tpm") > (i + 1) * 40; }));
  }
  const double settled = metric("infermesh_ratelimit_settled_tokens_total", "Tenant/team-a/tpm");
  EXPECT_GT(settled, 5 * 40);
  EXPECT_LT(settled, 5 * 60);
}

TEST_F(RateLimitTest, RequestsPerSecondAndPerApiKey) {
  startProxy(config("{}", ", limits: [{name: rps, per: [apiKey], requestsPerSecond: 3}]"));
  int ok = 0, refused = 0;
  for (int i = 0; i < 6; ++i) {
    auto r = call(port, kKeyA, body("chat", false, 5));
    (r.status == 200 ? ok : refused) += 1;
    if (r.status == 429) EXPECT_EQ(r.headers["x-ratelimit-limit-requests"], "3");
  }
  EXPECT_LE(ok, 4);  // 3, plus one refilled while the loop ran
  EXPECT_GE(refused, 2);
  // The other key of the same tenant counts on its own.
  EXPECT_EQ(call(port, kKeyA2, body("chat", false, 5)).status, 200);
}

TEST_F(RateLimitTest, AsksForStreamUsageAndRemovesIt) {
  startProxy(config("{}", ", limits: [{name: tpm, tokensPerMinute: 100000}]"));
  auto r = call(port, kKeyA, body("chat", true));
  ASSERT_EQ(r.status, 200) << r.body;
  auto s = summarize(r.body);
  EXPECT_EQ(s.content_events, 40);
  EXPECT_EQ(s.completion_tokens, -1) << "the usage chunk the client did not ask for reached it";
  EXPECT_TRUE(s.done);
  // The proxy settled on the model's own count all the same.
  EXPECT_TRUE(eventually([&] { return metric("infermesh_ratelimit_settled_tokens_total") > 40; }));

  r = call(port, kKeyA, body("chat", true, -1, /*include_usage=*/true));
  ASSERT_EQ(r.status, 200) << r.body;
  s = summarize(r.body);
  EXPECT_EQ(s.completion_tokens, 40);  // asked for: kept
  EXPECT_TRUE(s.done);
}

TEST_F(RateLimitTest, FinishesAStreamThatRunsPastTheLimit) {
  // The floor reserves 20 output tokens; the model writes 400.
  startProxy(config("{extendTokens: 16}",
                    ", limits: [{name: tpm, tokensPerMinute: 150, expectedOutputFloor: 20}]", "", longer.address()));
  auto r = call(port, kKeyA, body("chat", true));
  ASSERT_EQ(r.status, 200) << r.body;
  const auto s = summarize(r.body);
  EXPECT_TRUE(r.complete);
  EXPECT_EQ(s.finish_reason, "length");
  EXPECT_EQ(s.finished_by, "Tenant/team-a/tpm");
  EXPECT_TRUE(s.done);
  EXPECT_GT(s.content_events, 50);
  EXPECT_LT(s.content_events, 150);
  EXPECT_EQ(s.completion_tokens, s.content_events);  // the proxy's usage chunk counts what was sent
  EXPECT_EQ(metric("infermesh_ratelimit_finished_total", "Tenant/team-a/tpm"), 1);
  // Spent: the next stream is refused before the model is called.
  EXPECT_EQ(call(port, kKeyA, body("chat", true)).status, 429);
}

TEST_F(RateLimitTest, FinishesAStreamCleanlyOverHttp2) {
  std::string yaml = config("{extendTokens: 16}", ", limits: [{name: tpm, tokensPerMinute: 150, expectedOutputFloor: 20}]",
                            "", longer.address());
  yaml.replace(yaml.find("  address: 127.0.0.1:0\n"), 23, "  address: 127.0.0.1:0\n  protocol: auto\n");
  startProxy(yaml);
  // curl exits 0 only when the HTTP/2 stream ended cleanly (END_STREAM, no reset).
  const auto out = runCommand("curl -sS --max-time 10 --http2-prior-knowledge http://127.0.0.1:" + std::to_string(port) +
                              "/v1/chat/completions -H 'authorization: Bearer " + kKeyA + "' -d '" + body("chat", true) +
                              "'");
  EXPECT_EQ(out.status, 0) << out.out;
  const auto s = summarize(out.out);
  EXPECT_EQ(s.finish_reason, "length");
  EXPECT_EQ(s.finished_by, "Tenant/team-a/tpm");
  EXPECT_TRUE(s.done);
}

TEST_F(RateLimitTest, FinishesAnAnthropicStreamTheAnthropicWay) {
  AnthropicStreamUpstream engine(400);
  startProxy(config("{extendTokens: 16}", ", limits: [{name: tpm, tokensPerMinute: 150, expectedOutputFloor: 20}]", "",
                    engine.address()));
  const auto r = httpRequest(port, "POST", "/v1/messages",
                             R"({"model":"chat","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"Go on"}]})",
                             {{"content-type", "application/json"}, {"x-api-key", kKeyA}}, std::chrono::seconds(20));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(r.complete);
  // The engine writes far past max_tokens (100): the limit, not the engine, ends it.
  const auto stop = r.body.rfind("event: message_stop");
  ASSERT_NE(stop, std::string::npos) << r.body.substr(r.body.size() > 800 ? r.body.size() - 800 : 0);
  EXPECT_NE(r.body.find("\"stop_reason\":\"max_tokens\""), std::string::npos);
  EXPECT_NE(r.body.find("\"limit\":\"Tenant/team-a/tpm\""), std::string::npos);
  EXPECT_NE(r.body.find("event: content_block_stop"), std::string::npos);
  EXPECT_EQ(r.body.find("chat.completion.chunk"), std::string::npos) << "OpenAI chunks in an Anthropic stream";
  EXPECT_EQ(r.body.find("\"stop_reason\":\"end_turn\""), std::string::npos) << "the engine's end reached the client";
}

TEST_F(RateLimitTest, OnExhaustedAllowLetsTheStreamEndAndCountsOvershoot) {
  startProxy(config("{}", ", limits: [{name: tpm, tokensPerMinute: 150, expectedOutputFloor: 20, onExhausted: allow}]",
                    "", longer.address()));
  auto r = call(port, kKeyA, body("chat", true));
  ASSERT_EQ(r.status, 200) << r.body;
  const auto s = summarize(r.body);
  EXPECT_EQ(s.content_events, 400) << r.body.substr(r.body.size() > 600 ? r.body.size() - 600 : 0) << r.error;
  EXPECT_EQ(metricReaching("infermesh_ratelimit_overshoot_streams_total", "Tenant/team-a/tpm", 1), 1);
  EXPECT_GT(metric("infermesh_ratelimit_overshoot_tokens_total", "Tenant/team-a/tpm"), 200);
}

TEST_F(RateLimitTest, TheOpenAiSdkAcceptsAFinishedStream) {
  const std::string npm = INFERMESH_NPM_DIR;  // tests/npm/install.sh
  ASSERT_TRUE(std::filesystem::exists(npm + "/node_modules/openai"))
      << "the npm test packages are missing: run tests/npm/install.sh";
  startProxy(config("{extendTokens: 16}", ", limits: [{name: tpm, tokensPerMinute: 150, expectedOutputFloor: 20}]", "",
                    longer.address()));
  const auto out = runCommand("cd " + npm + " && node openai_stream.mjs http://127.0.0.1:" + std::to_string(port) +
                              "/v1 " + kKeyA + " chat 2>&1");
  EXPECT_EQ(out.status, 0) << out.out;
  EXPECT_NE(out.out.find("finish_reason=length"), std::string::npos) << out.out;
  EXPECT_NE(out.out.find("finished_by=Tenant/team-a/tpm"), std::string::npos) << out.out;
}

TEST_F(RateLimitTest, ClientThatDisconnectsIsChargedWhatWasGenerated) {
  startProxy(config("{}", ", limits: [{name: tpd, tokensPerDay: 100000}]", "", longer.address()));
  {
    HttpConnection c(port);
    const std::string b = body("chat", true);
    ASSERT_TRUE(c.sendRaw("POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                          "authorization: Bearer " + std::string(kKeyA) + "\r\ncontent-length: " +
                          std::to_string(b.size()) + "\r\n\r\n" + b));
    std::string got;
    eventually([&] {
      got += c.readSome(std::chrono::milliseconds(100));
      return got.find("\"content\"") != std::string::npos && got.size() > 4000;
    });
  }  // closed mid-stream
  const double settled = [&] {
    double v = 0;
    eventually([&] { return (v = metric("infermesh_ratelimit_settled_tokens_total", "Tenant/team-a/tpd")) > 0; },
               std::chrono::seconds(5));
    return v;
  }();
  EXPECT_GT(settled, 10);   // what was generated before the client left
  EXPECT_LT(settled, 400);  // not the whole stream it never read
}

// Three proxies, one Redis, one global limit, 60 concurrent streaming
// clients: what the fleet serves stays within the documented bound.
class FleetTest : public RateLimitTest {
 protected:
  static constexpr long kLimit = 6000;  // tokens per minute
  static constexpr long kBlock = 200;
  static constexpr int kProxies = 3;
  static constexpr int kClients = 60;

  struct Totals {
    std::atomic<long> tokens{0}, ok{0}, refused{0}, unavailable{0}, other{0};
  };

  void drive(const std::vector<std::unique_ptr<Node>>& nodes, Totals& t, std::chrono::milliseconds length,
             const std::function<void()>& midway = {}) {
    std::vector<std::thread> clients;
    const auto end = std::chrono::steady_clock::now() + length;
    for (int i = 0; i < kClients; ++i)
      clients.emplace_back([&, i] {
        while (std::chrono::steady_clock::now() < end) {
          const auto r = call(nodes[static_cast<std::size_t>(i % kProxies)]->port, kKeyA,
                              body("chat", true, -1, /*include_usage=*/true));
          if (r.status == 200) {
            const auto s = summarize(r.body);
            ++t.ok;
            if (s.prompt_tokens >= 0 && s.completion_tokens >= 0) t.tokens += s.prompt_tokens + s.completion_tokens;
            else ++t.other;  // every admitted stream reports its usage
          } else if (r.status == 429 || r.status == 503) {
            ++(r.status == 429 ? t.refused : t.unavailable);
            // A refused client backs off before it asks again, as SDKs do
            // (client behaviour, not a wait for a condition).
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
          } else {
            ++t.other;
          }
        }
      });
    if (midway) midway();
    for (auto& c : clients) c.join();
  }

  // limit + what refills while the test runs + one block per proxy + one
  // extension step per stream in flight.
  static long bound(std::chrono::steady_clock::duration elapsed) {
    const double secs = std::chrono::duration<double>(elapsed).count();
    return kLimit + static_cast<long>(secs * kLimit / 60.0) + kProxies * kBlock + kClients * 32;
  }

  std::string fleetConfig(const RedisServer& redis, const std::string& fail_mode) const {
    return config("{redis: '127.0.0.1:" + std::to_string(redis.port()) + "', keyPrefix: 'fleet-test:'}",
                  ", limits: [{name: tpm, tokensPerMinute: " + std::to_string(kLimit) +
                      ", scope: global, blockTokens: " + std::to_string(kBlock) + ", expectedOutputFloor: 40" +
                      ", failMode: " + fail_mode + "}]");
  }
};

TEST_F(FleetTest, ConcurrentStreamsStayWithinTheBound) {
  RedisServer redis;
  std::vector<std::unique_ptr<Node>> nodes;
  for (int i = 0; i < kProxies; ++i) nodes.push_back(startNode(fleetConfig(redis, "closed")));
  Totals t;
  const auto start = std::chrono::steady_clock::now();
  drive(nodes, t, std::chrono::seconds(4));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(t.other.load(), 0);
  EXPECT_GT(t.refused.load(), 0) << "the load did not reach the limit";
  EXPECT_GT(t.tokens.load(), kLimit / 2) << "the fleet admitted too little";
  EXPECT_LE(t.tokens.load(), bound(elapsed)) << "served " << t.tokens << " tokens against " << kLimit;
  double refused = 0;
  for (const auto& n : nodes) refused += scrape(n->admin, "infermesh_ratelimit_refused_total", "Tenant/team-a/tpm");
  EXPECT_EQ(refused, t.refused.load());
  std::printf("fleet: %ld tokens served in %.1f s against %ld/min (bound %ld), %ld streams, %ld refused\n",
              t.tokens.load(), std::chrono::duration<double>(elapsed).count(), kLimit, bound(elapsed), t.ok.load(),
              t.refused.load());
}

TEST_F(FleetTest, RedisKilledAndRestartedMidRun) {
  // Persistence on: a restarted Redis remembers the window (without it, a
  // restart starts a fresh window; docs/redis.md).
  RedisServer redis("", /*persistent=*/true);
  std::vector<std::unique_ptr<Node>> nodes;
  for (int i = 0; i < kProxies; ++i) nodes.push_back(startNode(fleetConfig(redis, "closed")));
  Totals t;
  const auto start = std::chrono::steady_clock::now();
  drive(nodes, t, std::chrono::seconds(5), [&] {
    // Killed once the fleet is serving, restarted once proxies noticed.
    EXPECT_TRUE(eventually([&] { return t.ok.load() >= 20; }, std::chrono::seconds(3)));
    redis.stop();
    EXPECT_TRUE(eventually([&] { return t.unavailable.load() >= 10; }, std::chrono::seconds(3)));
    redis.restart();
  });
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(t.other.load(), 0);
  EXPECT_GT(t.unavailable.load(), 0) << "failMode closed answered nothing with 503 while Redis was down";
  EXPECT_LE(t.tokens.load(), bound(elapsed)) << "served " << t.tokens << " tokens against " << kLimit;
  double refused_down = 0;
  for (const auto& n : nodes)
    refused_down += scrape(n->admin, "infermesh_ratelimit_store_unavailable_refused_total", "Tenant/team-a/tpm");
  EXPECT_EQ(refused_down, t.unavailable.load());
  // Recovered without a restart: a request with room is admitted again.
  // (The window may be spent by now; another tenant's key has room.)
  for (const auto& n : nodes) {
    const bool back = eventually(
        [&] { return call(n->port, kKeyB, body("chat", false, 5)).status == 200; }, std::chrono::seconds(5),
        std::chrono::milliseconds(100));
    EXPECT_TRUE(back);
  }
}

TEST_F(FleetTest, TheFirstRequestWaitsForEveryLeaseItNeeds) {
  // A request window and a token window, both global: the first request
  // finds both leases empty and waits for both blocks, then is admitted.
  RedisServer redis;
  auto node = startNode(config("{redis: '127.0.0.1:" + std::to_string(redis.port()) + "'}",
                               ", limits: [{name: both, tokensPerMinute: 100000, requestsPerMinute: 1000, scope: global}]"));
  auto r = call(node->port, kKeyA, body("chat", false, 5));
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["x-ratelimit-limit-requests"], "1000");
  EXPECT_EQ(r.headers["x-ratelimit-limit-tokens"], "100000");
}

TEST_F(FleetTest, FailOpenAdmitsAndCounts) {
  RedisServer redis;
  auto node = startNode(fleetConfig(redis, "open"));
  redis.stop();
  int ok = 0;
  for (int i = 0; i < 5; ++i) ok += call(node->port, kKeyA, body("chat", false, 5)).status == 200;
  EXPECT_EQ(ok, 5);
  EXPECT_GE(scrape(node->admin, "infermesh_ratelimit_store_unavailable_admitted_total", "Tenant/team-a/tpm"), 4);
}

TEST_F(RateLimitTest, BudgetSurvivesARestart) {
  // chat costs 1.0/1k in and 2.0/1k out: ~0.09 a request (about 10 in, 40 out).
  const std::string state = dir.path() + "/budgets.state";
  const std::string yaml = config("{stateFile: '" + state + "'}", ", budget: {perDay: 0.3}");
  auto node = startNode(yaml);
  int ok = 0;
  HttpResponse r;
  for (int i = 0; i < 10; ++i) {
    r = call(node->port, kKeyA, body("chat", false, 40));
    if (r.status != 200) break;
    ++ok;
  }
  ASSERT_EQ(r.status, 429) << r.body;
  EXPECT_TRUE(hasCode(r, "budget_exceeded")) << r.body;
  EXPECT_GE(std::atoi(r.headers["retry-after"].c_str()), 1);
  EXPECT_GE(ok, 2);
  EXPECT_LE(ok, 4);
  const double spent = scrape(node->admin, "infermesh_budget_spent_total", "tenant=\"team-a\"");
  EXPECT_GT(spent, 0.2);
  EXPECT_LT(spent, 0.45);
  // Another tenant has no budget.
  EXPECT_EQ(call(node->port, kKeyB, body("chat", false, 40)).status, 200);

  node->process->signal(SIGTERM);
  EXPECT_EQ(node->process->wait(std::chrono::seconds(10)), 0);
  node = startNode(yaml);
  r = call(node->port, kKeyA, body("chat", false, 40));
  EXPECT_EQ(r.status, 429) << "the restart forgot what team-a spent: " << r.body;
  EXPECT_TRUE(hasCode(r, "budget_exceeded")) << r.body;
}

TEST_F(RateLimitTest, AGlobalBudgetIsSharedByTheFleet) {
  RedisServer redis;
  const std::string yaml = config("{redis: '127.0.0.1:" + std::to_string(redis.port()) + "', keyPrefix: 'budget-test:'}",
                                  ", budget: {perDay: 0.3, scope: global}");
  auto one = startNode(yaml);
  auto two = startNode(yaml);
  int ok = 0;
  HttpResponse r;
  for (int i = 0; i < 10; ++i) {
    r = call(one->port, kKeyA, body("chat", false, 40));
    if (r.status != 200) break;
    ++ok;
  }
  ASSERT_TRUE(hasCode(r, "budget_exceeded")) << r.body;
  EXPECT_GE(ok, 2);
  // The other proxy learns what the fleet spent from Redis (within a second).
  EXPECT_TRUE(eventually([&] { return hasCode(call(two->port, kKeyA, body("chat", false, 40)), "budget_exceeded"); },
                         std::chrono::seconds(5), std::chrono::milliseconds(200)));
  const auto day = std::chrono::duration_cast<std::chrono::hours>(std::chrono::system_clock::now().time_since_epoch()).count() / 24;
  const long micros = std::atol(redis.command({"GET", "budget-test:budget|team-a|day|" + std::to_string(day)}).c_str());
  EXPECT_GT(micros, 200000) << "the fleet's day total in Redis, in microunits";
}

TEST_F(RateLimitTest, OverBudgetDowngradesToTheCheapestModelThatFits) {
  const std::string yaml = config("{stateFile: '" + dir.path() + "/budgets.state'}",
                                  ", budget: {perDay: 0.3, onExceeded: downgrade}",
                                  ", budgetDowngrade: [premium, cheap]");
  auto node = startNode(yaml);
  bool downgraded = false;
  for (int i = 0; i < 10 && !downgraded; ++i) {
    auto r = call(node->port, kKeyA, body("chat", false, 40));
    ASSERT_EQ(r.status, 200) << r.body;
    if (r.headers["x-infermesh-model"] == "cheap") {
      downgraded = true;
      EXPECT_NE(r.body.find("\"model\":\"cheap\""), std::string::npos) << "the engine was not asked for cheap";
    } else {
      EXPECT_EQ(r.headers["x-infermesh-model"], "chat");
    }
  }
  EXPECT_TRUE(downgraded);
  EXPECT_GE(scrape(node->admin, "infermesh_budget_downgraded_total", "tenant=\"team-a\""), 1);
  // A stream downgraded the same way.
  auto r = call(node->port, kKeyA, body("chat", true));
  EXPECT_EQ(r.headers["x-infermesh-model"], "cheap");
}

}  // namespace
}  // namespace infermesh::testing
