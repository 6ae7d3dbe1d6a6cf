// What the router may send twice, and what it holds back from the client
// until it is sure: pooled connections the server closes under a request,
// keep-alive limits, and failures between the response head and the first
// token.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <cstdlib>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/recording_upstream.h"

namespace infermesh::testing {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// A listening socket on 127.0.0.1, port picked by the kernel.
int listenLoopback(int& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::listen(fd, 64);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  port = ntohs(addr.sin_port);
  return fd;
}

bool writeAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// A base for the small servers below: accepts on its own thread and runs
// each connection on another; everything stops with the object.
class RawServer {
 public:
  RawServer() : listen_fd_(listenLoopback(port_)) {}
  virtual ~RawServer() {
    stopAndJoin();
    ::close(listen_fd_);
  }
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

 protected:
  void start() {
    acceptor_ = std::thread([this] {
      for (int index = 0; !stop_;) {
        pollfd p{listen_fd_, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) continue;
        connections_.emplace_back([this, fd, i = index++] {
          serve(fd, i);
          ::close(fd);
        });
      }
    });
  }
  virtual void serve(int fd, int index) = 0;
  // Called by each derived destructor: its serve() uses its members.
  void stopAndJoin() {
    stop_ = true;
    if (acceptor_.joinable()) acceptor_.join();
    for (auto& t : connections_) t.join();
    connections_.clear();
  }

  bool readMore(int fd, std::string& buf) { return infermesh::testing::readMore(fd, buf, stop_); }

  std::atomic<bool> stop_{false};

 private:
  int port_ = 0;
  int listen_fd_ = -1;
  std::thread acceptor_;
  std::vector<std::thread> connections_;  // only the acceptor thread adds
};

// An HTTP/1.1 model server that follows a script: per request it either
// answers (with `extra_headers`) or reads it whole and closes without a
// word, the way a server whose keep-alive timeout fired under the request
// behaves. It counts what it saw and notices when the proxy closes an idle
// connection.
class ScriptedUpstream : public RawServer {
 public:
  enum class Action { Answer, CloseSilently };
  // (connection index, request index on that connection) -> what to do.
  using Script = std::function<Action(int, int)>;

  explicit ScriptedUpstream(Script script, std::string extra_headers = "")
      : script_(std::move(script)), extra_headers_(std::move(extra_headers)) {
    start();
  }
  ~ScriptedUpstream() override { stopAndJoin(); }

  int requests() const { return requests_; }
  int connections() const { return connections_; }
  // How long each connection the proxy closed had idled after its last answer.
  std::vector<Clock::duration> idleBeforeProxyClosed() const {
    std::lock_guard lock(mutex_);
    return idle_closed_;
  }
  std::vector<std::string> methods() const {
    std::lock_guard lock(mutex_);
    return methods_;
  }

 private:
  void serve(int fd, int index) override {
    ++connections_;
    std::string buf;
    Clock::time_point answered_at{};
    for (int n = 0;; ++n) {
      std::size_t end;
      while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
        if (!readMore(fd, buf)) {
          if (buf.empty() && n > 0 && !stop_) {
            std::lock_guard lock(mutex_);
            idle_closed_.push_back(Clock::now() - answered_at);
          }
          return;
        }
      }
      const std::string head = buf.substr(0, end + 4);
      std::size_t length = 0;
      std::string lower = head;
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (auto at = lower.find("\r\ncontent-length:"); at != std::string::npos)
        length = std::strtoul(lower.c_str() + at + 17, nullptr, 10);
      while (buf.size() < end + 4 + length)
        if (!readMore(fd, buf)) return;
      buf.erase(0, end + 4 + length);
      ++requests_;
      {
        std::lock_guard lock(mutex_);
        methods_.push_back(head.substr(0, head.find(' ')));
      }
      if (script_(index, n) == Action::CloseSilently) return;
      const std::string body =
          R"({"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant",)"
          R"("content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,)"
          R"("total_tokens":2}})";
      if (!writeAll(fd, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " +
                            std::to_string(body.size()) + "\r\n" + extra_headers_ + "\r\n" + body))
        return;
      answered_at = Clock::now();
    }
  }

  Script script_;
  std::string extra_headers_;
  std::atomic<int> requests_{0};
  std::atomic<int> connections_{0};
  mutable std::mutex mutex_;
  std::vector<Clock::duration> idle_closed_;
  std::vector<std::string> methods_;
};

// An HTTP/2 (h2c) server that answers every request with a `200` event
// stream head and then resets the stream before any data: an engine that
// fails between the head and the first token.
class H2HeadThenReset : public RawServer {
 public:
  H2HeadThenReset() { start(); }
  ~H2HeadThenReset() override { stopAndJoin(); }
  int requests() const { return requests_; }

 private:
  static std::string frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream, std::string_view payload) {
    std::string f;
    const auto len = payload.size();
    for (int shift : {16, 8, 0}) f += static_cast<char>(len >> shift);
    f += static_cast<char>(type);
    f += static_cast<char>(flags);
    for (int shift : {24, 16, 8, 0}) f += static_cast<char>(stream >> shift);
    f.append(payload);
    return f;
  }
  // A literal header field without indexing (HPACK, no Huffman; short strings).
  static void literal(std::string& b, std::string_view name, std::string_view value) {
    b += '\0';
    b += static_cast<char>(name.size());
    b += name;
    b += static_cast<char>(value.size());
    b += value;
  }

  void serve(int fd, int) override {
    constexpr std::uint8_t kHeaders = 1, kRstStream = 3, kSettings = 4, kEndStream = 0x1, kAck = 0x1,
                           kEndHeaders = 0x4;
    std::string buf;
    while (buf.size() < 24)
      if (!readMore(fd, buf)) return;
    buf.erase(0, 24);  // the client preface
    if (!writeAll(fd, frame(kSettings, 0, 0, {}))) return;
    for (;;) {
      while (buf.size() < 9 || buf.size() < 9 + ((std::size_t(std::uint8_t(buf[0])) << 16) |
                                                  (std::size_t(std::uint8_t(buf[1])) << 8) | std::uint8_t(buf[2])))
        if (!readMore(fd, buf)) return;
      const std::size_t len =
          (std::size_t(std::uint8_t(buf[0])) << 16) | (std::size_t(std::uint8_t(buf[1])) << 8) | std::uint8_t(buf[2]);
      const auto type = static_cast<std::uint8_t>(buf[3]);
      const auto flags = static_cast<std::uint8_t>(buf[4]);
      std::uint32_t stream = 0;
      for (int i = 5; i < 9; ++i) stream = (stream << 8) | std::uint8_t(buf[i]);
      stream &= 0x7fffffff;
      buf.erase(0, 9 + len);
      if (type == kSettings && !(flags & kAck) && !writeAll(fd, frame(kSettings, kAck, 0, {}))) return;
      if (stream != 0 && (flags & kEndStream)) {
        ++requests_;
        std::string block;
        literal(block, ":status", "200");
        literal(block, "content-type", "text/event-stream");
        const std::string internal_error("\0\0\0\2", 4);
        if (!writeAll(fd, frame(kHeaders, kEndHeaders, stream, block) + frame(kRstStream, 0, stream, internal_error)))
          return;
      }
    }
  }

  std::atomic<int> requests_{0};
};

class UpstreamReuseTest : public ProxyTest {
 protected:
  static void SetUpTestSuite() {
    ProxyTest::SetUpTestSuite();
    drops_head = startMock("drops-head", {"--models", "chat-model", "--drop-after-head", "100000"});
  }
  static void TearDownTestSuite() {
    drops_head.process.reset();
    ProxyTest::TearDownTestSuite();
  }
  // A route taking requests that carry `x-case: <name>`.
  static std::string caseRoute(const std::string& name, const std::string& spec_fields) {
    return doc("Route", name, "{order: 10, match: {headers: [{name: x-case, value: " + name + "}]}, " + spec_fields + "}");
  }
  static std::string scriptedModel(const ScriptedUpstream& u, const std::string& extra = "") {
    return doc("Model", "scripted", "{upstreamModel: chat-model, " + extra + (extra.empty() ? "" : ", ") +
                                        "endpoints: [{address: '" + u.address() + "'}]}");
  }
  HttpResponse send(const std::string& which, const std::string& method = "POST", bool stream = false,
                    const std::string& model = "chat-model") {
    return httpRequest(port, method, method == "GET" ? "/v1/models" : "/v1/chat/completions",
                       method == "GET" ? "" : chatBody(model, stream), {{"x-case", which}});
  }
  // A complete event stream that the named model served.
  static void expectCompleteStreamFrom(const HttpResponse& r, const std::string& model) {
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_TRUE(r.complete) << "a cut stream: " << r.body;
    EXPECT_NE(r.body.find("[DONE]"), std::string::npos) << r.body;
    EXPECT_EQ(r.body.find("event: error"), std::string::npos) << r.body;
    const auto it = r.headers.find("x-infermesh-model");
    EXPECT_EQ(it == r.headers.end() ? "" : it->second, model);
  }

  static inline Mock drops_head;
};

// The first request on every connection is answered and kept alive; the
// next one on the same connection is read whole and met with a close.
ScriptedUpstream::Action closeOnReuse(int, int request) {
  return request == 0 ? ScriptedUpstream::Action::Answer : ScriptedUpstream::Action::CloseSilently;
}

TEST_F(UpstreamReuseTest, APostIsNeverSentTwiceWhenAReusedConnectionClosesUnderIt) {
  ScriptedUpstream upstream(closeOnReuse);
  startProxy(baseConfig() + scriptedModel(upstream) + caseRoute("plain", "model: scripted"));
  ASSERT_EQ(send("plain").status, 200);
  // The pooled connection is reused; the server took the POST and closed.
  // It may have started the generation: the client hears of the failure.
  auto r = send("plain");
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_TRUE(hasCode(r, "upstream_reset")) << r.body;
  EXPECT_EQ(upstream.requests(), 2);
  EXPECT_EQ(upstream.connections(), 1);
  EXPECT_EQ(metric("infermesh_upstream_retries_total"), 0);
  // The next request takes a fresh connection.
  EXPECT_EQ(send("plain").status, 200);
}

TEST_F(UpstreamReuseTest, AReplayOfAPostIsARetryTheRouteAllows) {
  ScriptedUpstream upstream(closeOnReuse);
  startProxy(baseConfig() + scriptedModel(upstream) +
             caseRoute("replay", "model: scripted, retry: {on: [reset], retryNonIdempotent: true}"));
  ASSERT_EQ(send("replay").status, 200);
  auto r = send("replay");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(upstream.requests(), 3);
  EXPECT_EQ(upstream.connections(), 2);
  EXPECT_EQ(metric("infermesh_upstream_retries_total"), 1);
}

TEST_F(UpstreamReuseTest, AnIdempotentRequestIsReplayedAndCounted) {
  ScriptedUpstream upstream(closeOnReuse);
  startProxy(baseConfig() + scriptedModel(upstream) + caseRoute("get", "model: scripted"));
  ASSERT_EQ(send("get", "GET").status, 200);
  auto r = send("get", "GET");
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(upstream.requests(), 3);
  EXPECT_EQ(upstream.methods(), (std::vector<std::string>{"GET", "GET", "GET"}));
  EXPECT_EQ(metric("infermesh_upstream_retries_total"), 1);
}

TEST_F(UpstreamReuseTest, ConnectionCloseFromTheServerMeansNoReuse) {
  // The server says close but leaves the socket open: only the proxy can
  // end it.
  ScriptedUpstream upstream([](int, int) { return ScriptedUpstream::Action::Answer; }, "connection: close\r\n");
  startProxy(baseConfig() + scriptedModel(upstream) + caseRoute("close", "model: scripted"));
  for (int i = 0; i < 3; ++i) ASSERT_EQ(send("close").status, 200);
  EXPECT_EQ(upstream.connections(), 3);
  EXPECT_TRUE(eventually([&] { return upstream.idleBeforeProxyClosed().size() == 3; }));
}

TEST_F(UpstreamReuseTest, KeepAliveTimeoutFromTheServerIsHonoured) {
  ScriptedUpstream upstream([](int, int) { return ScriptedUpstream::Action::Answer; }, "keep-alive: timeout=1\r\n");
  startProxy(baseConfig() + scriptedModel(upstream) + caseRoute("ka", "model: scripted"));
  ASSERT_EQ(send("ka").status, 200);
  ASSERT_EQ(send("ka").status, 200);
  EXPECT_EQ(upstream.connections(), 1);  // reused within the server's limit
  // The proxy ends the idle connection itself, before the server's 1 s.
  ASSERT_TRUE(eventually([&] { return !upstream.idleBeforeProxyClosed().empty(); }, 3000ms));
  const auto idle = upstream.idleBeforeProxyClosed().front();
  EXPECT_LT(idle, 1000ms);
  EXPECT_GE(idle, 300ms);
  ASSERT_EQ(send("ka").status, 200);
  EXPECT_EQ(upstream.connections(), 2);
}

TEST_F(UpstreamReuseTest, TheModelsIdleTimeoutBoundsReuse) {
  ScriptedUpstream upstream([](int, int) { return ScriptedUpstream::Action::Answer; });
  startProxy(baseConfig() + scriptedModel(upstream, "upstreamIdleTimeout: 300ms") +
             caseRoute("idle", "model: scripted"));
  ASSERT_EQ(send("idle").status, 200);
  ASSERT_TRUE(eventually([&] { return !upstream.idleBeforeProxyClosed().empty(); }, 3000ms));
  EXPECT_LT(upstream.idleBeforeProxyClosed().front(), 1000ms);
}

TEST_F(UpstreamReuseTest, AStreamWhoseHeadCameButNoTokenFallsBack) {
  startProxy(baseConfig() +
             doc("Model", "head-dropper", "{upstreamModel: chat-model, endpoints: [{address: '" +
                                              drops_head.address() + "'}]}") +
             caseRoute("drop", "model: head-dropper, fallbacks: [{model: chat-model, on: ['5xx']}]") +
             caseRoute("drop-unheld", "model: head-dropper, holdHeadUntilFirstByte: false, "
                                      "fallbacks: [{model: chat-model, on: ['5xx']}]") +
             caseRoute("drop-alone", "model: head-dropper, retry: {on: [reset]}"));
  // The `200` head went nowhere; the fallback serves the whole stream.
  expectCompleteStreamFrom(send("drop", "POST", true), "chat-model");
  EXPECT_EQ(metric("infermesh_upstream_fallbacks_total"), 1);
  // Without the hold the head was the client's already: a cut stream.
  auto r = send("drop-unheld", "POST", true);
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(r.complete);
  EXPECT_NE(r.body.find("event: error"), std::string::npos) << r.body;
  // The POST reached the model: without retryNonIdempotent it is not sent
  // again, and the client gets the failure as a plain error.
  const int before = mockStat(drops_head, "requests");
  r = send("drop-alone", "POST", true);
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_TRUE(hasCode(r, "upstream_reset")) << r.body;
  EXPECT_EQ(mockStat(drops_head, "requests"), before + 1);
}

TEST_F(UpstreamReuseTest, AHeldStreamIsRetriedOnlyWhereAllowedAndCounted) {
  startProxy(baseConfig() +
             doc("Model", "half-dropping",
                 "{upstreamModel: chat-model, loadBalancer: {policy: round_robin}, outlierDetection: "
                 "{consecutiveFailures: 0}, endpoints: [{address: '" + drops_head.address() + "'}, {address: '" +
                     fast_b.address() + "'}]}") +
             caseRoute("retry", "model: half-dropping, retry: {on: [reset], retryNonIdempotent: true}"));
  const int before = mockStat(drops_head, "requests");
  for (int i = 0; i < 4; ++i) expectCompleteStreamFrom(send("retry", "POST", true), "half-dropping");
  // Every request that met the dropping endpoint went again, once, counted.
  const int dropped = mockStat(drops_head, "requests") - before;
  EXPECT_GE(dropped, 1);
  EXPECT_EQ(metric("infermesh_upstream_retries_total"), dropped);
}

TEST_F(UpstreamReuseTest, TheFirstTokenTimeoutOfAStreamFallsBack) {
  startProxy(baseConfig());
  // sluggish-patient sends its head at once and the first token after 3 s;
  // the route allows 300 ms and falls back on timeouts.
  const auto start = Clock::now();
  auto r = httpRequest(port, "POST", "/v1/chat/completions", chatBody("chat-model", true),
                       {{"x-test-fallback", "slow"}});
  expectCompleteStreamFrom(r, "chat-model");
  EXPECT_LT(Clock::now() - start, 2000ms);
}

TEST_F(UpstreamReuseTest, AnHttp2StreamResetBeforeTheFirstByteFallsBack) {
  H2HeadThenReset upstream;
  startProxy(baseConfig() +
             doc("Model", "h2-resetting", "{upstreamModel: chat-model, upstreamProtocol: http2, endpoints: [{address: '" +
                                              upstream.address() + "'}]}") +
             caseRoute("h2", "model: h2-resetting, fallbacks: [{model: chat-model, on: ['5xx']}]"));
  expectCompleteStreamFrom(send("h2", "POST", true), "chat-model");
  EXPECT_EQ(upstream.requests(), 1);
}

}  // namespace
}  // namespace infermesh::testing
