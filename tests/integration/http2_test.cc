// HTTP/2 downstream, end to end: real HTTP/2 peers (curl, nghttp, h2load)
// and hand-made frames for the abuse cases, against the proxy on loopback.
#include <signal.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <thread>

#include "tests/integration/proxy_fixture.h"

namespace infermesh::testing {
namespace {

using namespace std::chrono_literals;

CommandResult run(const std::string& cmd) { return runCommand(cmd); }

// Minimal HTTP/2 framing for the cases no well-behaved client produces.
namespace h2 {
constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr std::uint8_t kData = 0, kHeaders = 1, kRstStream = 3, kSettings = 4, kPing = 6, kGoaway = 7;

std::string frame(std::uint8_t type, std::uint8_t flags, std::uint32_t stream, std::string_view payload) {
  std::string f;
  const auto len = payload.size();
  f += static_cast<char>(len >> 16);
  f += static_cast<char>(len >> 8);
  f += static_cast<char>(len);
  f += static_cast<char>(type);
  f += static_cast<char>(flags);
  for (int shift : {24, 16, 8, 0}) f += static_cast<char>(stream >> shift);
  f.append(payload);
  return f;
}

// HPACK integer with a 7-bit prefix (RFC 7541 section 5.1).
void integer(std::string& out, std::size_t v) {
  if (v < 127) {
    out += static_cast<char>(v);
    return;
  }
  out += static_cast<char>(127);
  v -= 127;
  while (v >= 128) {
    out += static_cast<char>((v % 128) + 128);
    v /= 128;
  }
  out += static_cast<char>(v);
}

// A header block of literal fields without indexing (no Huffman).
std::string block(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string b;
  for (const auto& [n, v] : fields) {
    b += '\0';
    integer(b, n.size());
    b += n;
    integer(b, v.size());
    b += v;
  }
  return b;
}

std::string request(std::uint32_t stream, const std::string& body) {
  const std::string headers = block({{":method", "POST"},
                                     {":scheme", "http"},
                                     {":path", "/v1/chat/completions"},
                                     {":authority", "proxy"},
                                     {"content-type", "application/json"}});
  return frame(kHeaders, 0x4 /*END_HEADERS*/, stream, headers) + frame(kData, 0x1 /*END_STREAM*/, stream, body);
}

std::string rst(std::uint32_t stream) { return frame(kRstStream, 0, stream, std::string("\0\0\0\x8", 4)); }

std::string be32(std::uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}
constexpr std::uint8_t kWindowUpdate = 8;

// Reads frames until `stream` ends (END_STREAM); the DATA bytes seen.
std::int64_t readUntilEnd(HttpConnection& c, std::uint32_t stream, std::chrono::milliseconds limit) {
  std::string buf;
  std::int64_t data = 0;
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    buf += c.readSome(200ms);
    std::size_t at = 0;
    while (buf.size() - at >= 9) {
      const auto len = (std::size_t(std::uint8_t(buf[at])) << 16) | (std::size_t(std::uint8_t(buf[at + 1])) << 8) |
                       std::uint8_t(buf[at + 2]);
      if (buf.size() - at < 9 + len) break;
      const auto type = std::uint8_t(buf[at + 3]), flags = std::uint8_t(buf[at + 4]);
      const auto id = (std::uint32_t(std::uint8_t(buf[at + 5])) << 24 | std::uint32_t(std::uint8_t(buf[at + 6])) << 16 |
                       std::uint32_t(std::uint8_t(buf[at + 7])) << 8 | std::uint8_t(buf[at + 8])) & 0x7fffffff;
      if (type == kData && id == stream) data += static_cast<std::int64_t>(len);
      if (id == stream && (flags & 0x1) && (type == kData || type == kHeaders)) return data;
      at += 9 + len;
    }
    buf.erase(0, at);
  }
  return -data - 1;  // did not end
}

// Reads frames until a GOAWAY arrives; its error code, or -1.
int goawayCode(HttpConnection& c, std::chrono::milliseconds limit) {
  std::string buf;
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    std::string more = c.readSome(200ms);
    buf += more;
    std::size_t at = 0;
    while (buf.size() - at >= 9) {
      const auto len = (std::size_t(std::uint8_t(buf[at])) << 16) | (std::size_t(std::uint8_t(buf[at + 1])) << 8) |
                       std::uint8_t(buf[at + 2]);
      if (buf.size() - at < 9 + len) break;
      if (std::uint8_t(buf[at + 3]) == kGoaway && len >= 8) {
        const auto* p = reinterpret_cast<const std::uint8_t*>(buf.data() + at + 9 + 4);
        return (p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3];
      }
      at += 9 + len;
    }
    buf.erase(0, at);
    if (more.empty() && c.closedByPeer(10ms)) break;
  }
  return -1;
}
}  // namespace h2

class Http2Test : public ProxyTest {
 protected:
  // The usual config with the listener speaking `protocol` and a small
  // header limit.
  std::string h2Config(const std::string& protocol = "auto") const {
    std::string y = baseConfig();
    const std::string from = "  limits: {";
    y.replace(y.find(from), from.size(), "  protocol: " + protocol + "\n  limits: {maxRequestHeaderBytes: 4096, ");
    return y;
  }
  // The proxy's resident memory.
  double rssKib() const {
    std::string value;
    if (FILE* f = std::fopen(("/proc/" + std::to_string(proxy->pid()) + "/status").c_str(), "r")) {
      char line[256];
      while (std::fgets(line, sizeof line, f))
        if (std::string_view(line).starts_with("VmRSS:")) value = line + 6;
      std::fclose(f);
    }
    return std::atof(value.c_str());
  }
  std::string url(const std::string& path = "/v1/chat/completions") const {
    return "http://127.0.0.1:" + std::to_string(port) + path;
  }
  static std::string chatJson(const std::string& model, bool stream) {
    return "'{\"model\":\"" + model + "\",\"stream\":" + (stream ? "true" : "false") +
           ",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'";
  }
};

TEST_F(Http2Test, AutoServesHttp2AndHttp1OnOnePort) {
  startProxy(h2Config("auto"));
  auto r = run("curl -sS --http2-prior-knowledge -w '\\n%{http_version} %{http_code}' " + url() + " -d " +
               chatJson("chat-model", false));
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("\"object\":\"chat.completion\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\n2 200"), std::string::npos) << r.out;
  // The same port still speaks HTTP/1.1.
  EXPECT_EQ(chat("chat-model").status, 200);
  // Streaming: every event, then [DONE].
  r = run("curl -sSN --http2-prior-knowledge " + url() + " -d " + chatJson("chat-model", true));
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("data: [DONE]"), std::string::npos) << r.out;
  EXPECT_EQ(metricReaching("infermesh_http_requests_total", "model=\"chat-model\",status_class=\"2xx\"", 3), 3);
}

TEST_F(Http2Test, Http2OnlyListenerAndNghttpSeesTheSettings) {
  startProxy(h2Config("http2"));
  auto r = run("echo " + chatJson("chat-model", false) + " > " + dir.path() + "/body.json; nghttp -v -d " +
               dir.path() + "/body.json " + url() + " 2>&1");
  EXPECT_NE(r.out.find("SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(":status: 200"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("x-infermesh-model: chat-model"), std::string::npos) << r.out;
}

TEST_F(Http2Test, ManyConcurrentStreamsWithH2load) {
  startProxy(h2Config("http2"));
  run("echo " + chatJson("chat-model", false) + " > " + dir.path() + "/body.json");
  auto r = run("h2load -n 400 -c 2 -m 50 -d " + dir.path() + "/body.json " + url() + " 2>&1");
  EXPECT_NE(r.out.find("400 succeeded, 0 failed, 0 errored"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("status codes: 400 2xx"), std::string::npos) << r.out;
}

TEST_F(Http2Test, AFailureMidStreamResetsTheStreamAfterAnErrorEvent) {
  startProxy(h2Config("http2"));
  run("echo " + chatJson("flaky-model", true) + " > " + dir.path() + "/body.json");
  auto r = run("nghttp -v -d " + dir.path() + "/body.json " + url() + " 2>&1");
  EXPECT_NE(r.out.find("event: error"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("recv RST_STREAM"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("error_code=INTERNAL_ERROR"), std::string::npos) << r.out;
  // curl reports the stream as failed, never as a complete response.
  r = run("curl -sSN --http2-prior-knowledge " + url() + " -d " + chatJson("flaky-model", true) + " 2>&1");
  EXPECT_EQ(r.status, 92) << r.out;
  EXPECT_EQ(r.out.find("[DONE]"), std::string::npos);
  EXPECT_EQ(metricReaching("infermesh_streams_aborted_total", "reason=\"reset\"", 2), 2);
}

TEST_F(Http2Test, AClientResetCancelsTheUpstreamExchange) {
  startProxy(h2Config("http2"));
  HttpConnection c(port);
  ASSERT_TRUE(c.connected());
  const std::string body = "{\"model\":\"slow-model\",\"stream\":true,\"messages\":[]}";
  ASSERT_TRUE(c.sendRaw(std::string(h2::kPreface) + h2::frame(h2::kSettings, 0, 0, "") + h2::request(1, body)));
  std::this_thread::sleep_for(300ms);  // the stream is running upstream
  ASSERT_TRUE(c.sendRaw(h2::rst(1)));
  EXPECT_EQ(metricReaching("infermesh_downstream_disconnects_total", "", 1), 1);
  // The connection itself stays usable.
  ASSERT_TRUE(c.sendRaw(h2::request(3, "{\"model\":\"chat-model\",\"messages\":[]}")));
  EXPECT_EQ(metricReaching("infermesh_http_requests_total", "model=\"chat-model\",status_class=\"2xx\"", 1), 1);
}

TEST_F(Http2Test, RapidResetAndPingFloodsGetGoaway) {
  startProxy(h2Config("http2"));
  {
    HttpConnection c(port);
    std::string burst = std::string(h2::kPreface) + h2::frame(h2::kSettings, 0, 0, "");
    for (std::uint32_t id = 1; id < 2 * 300; id += 2)
      burst += h2::request(id, "{\"model\":\"slow-model\",\"messages\":[]}") + h2::rst(id);
    c.sendRaw(burst);
    EXPECT_EQ(h2::goawayCode(c, 3s), 0xb);  // ENHANCE_YOUR_CALM
  }
  {
    HttpConnection c(port);
    std::string burst = std::string(h2::kPreface) + h2::frame(h2::kSettings, 0, 0, "");
    for (int i = 0; i < 200; ++i) burst += h2::frame(h2::kPing, 0, 0, "12345678");
    c.sendRaw(burst);
    EXPECT_EQ(h2::goawayCode(c, 3s), 0xb);
  }
  EXPECT_EQ(metric("infermesh_http2_protections_total", "reason=\"rapid_reset\""), 1);
  EXPECT_EQ(metric("infermesh_http2_protections_total", "reason=\"ping_flood\""), 1);
  // Garbage instead of a preface: a clean close, counted.
  {
    HttpConnection c(port);
    c.sendRaw("PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n");
    EXPECT_TRUE(c.closedByPeer(2s));
  }
  EXPECT_EQ(metricReaching("infermesh_http2_protections_total", "reason=\"protocol_error\"", 1), 1);
  // Still serving.
  auto r = run("curl -sS --http2-prior-knowledge -o /dev/null -w '%{http_code}' " + url() + " -d " +
               chatJson("chat-model", false));
  EXPECT_EQ(r.out, "200");
}

TEST_F(Http2Test, AClientThatDoesNotReadStopsTheUpstreamRead) {
  // A backend that streams about 19 MB as fast as it can.
  auto firehose = startMock("firehose", {"--models", "chat-model", "--chunks", "100000"});
  startProxy(h2Config("http2") + "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: firehose}\n"
             "spec: {upstreamModel: chat-model, endpoints: [{address: '" + firehose.address() + "'}]}\n");
  const double rss_before = rssKib();
  HttpConnection c(port);
  // The client's stream window is 1 KiB and it sends no WINDOW_UPDATE.
  const std::string settings = std::string("\0\x4", 2) + h2::be32(1024);  // SETTINGS_INITIAL_WINDOW_SIZE
  ASSERT_TRUE(c.sendRaw(std::string(h2::kPreface) + h2::frame(h2::kSettings, 0, 0, settings) +
                        h2::request(1, "{\"model\":\"firehose\",\"stream\":true,\"messages\":[]}")));
  std::this_thread::sleep_for(1500ms);
  // The response is far from done: the proxy read only what it could hold
  // (its per-stream buffer), so the backend is held back too.
  EXPECT_EQ(metric("infermesh_http_requests_total", "model=\"firehose\""), 0);
  EXPECT_EQ(mockStat(firehose, "completed"), 0) << "the backend could write its whole answer";
  EXPECT_LT(rssKib() - rss_before, 16 * 1024) << "the proxy should not hold the response in memory";
  // Open the windows: everything arrives, and the stream ends cleanly.
  c.sendRaw(h2::frame(h2::kWindowUpdate, 0, 1, h2::be32(0x7fffffff - 1024)) +
            h2::frame(h2::kWindowUpdate, 0, 0, h2::be32(0x7fffffff - 65535)));
  const auto got = h2::readUntilEnd(c, 1, 60s);
  EXPECT_GT(got, 10 * 1024 * 1024);
  EXPECT_EQ(metricReaching("infermesh_http_requests_total", "model=\"firehose\",status_class=\"2xx\"", 1), 1);
  EXPECT_EQ(mockStat(firehose, "completed"), 1);
}

TEST_F(Http2Test, MoreStreamsThanAllowedAreRefusedAndCounted) {
  std::string config = h2Config("http2");
  config.replace(config.find("maxRequestHeaderBytes: 4096, "), 29, "maxRequestHeaderBytes: 4096, maxConcurrentStreams: 2, ");
  startProxy(config);
  HttpConnection c(port);
  // The client ignores the limit: three slow streams at once.
  std::string burst = std::string(h2::kPreface) + h2::frame(h2::kSettings, 0, 0, "");
  for (std::uint32_t id : {1u, 3u, 5u}) burst += h2::request(id, "{\"model\":\"slow-model\",\"messages\":[]}");
  std::this_thread::sleep_for(100ms);  // our SETTINGS reach the client first, as they would
  c.sendRaw(burst);
  EXPECT_GE(metricReaching("infermesh_http2_protections_total", "reason=\"stream_limit\"", 1), 1);
  // Clients within the limit are served.
  run("echo " + chatJson("chat-model", false) + " > " + dir.path() + "/body.json");
  auto r = run("h2load -n 40 -c 1 -m 2 -d " + dir.path() + "/body.json " + url() + " 2>&1");
  EXPECT_NE(r.out.find("40 succeeded, 0 failed, 0 errored"), std::string::npos) << r.out;
}

TEST_F(Http2Test, OversizedHeadersAndBodiesGetTheir4xx) {
  startProxy(h2Config("http2"));
  auto r = run("curl -sS --http2-prior-knowledge -o /dev/null -w '%{http_code}' -H 'x-big: " + std::string(6000, 'a') +
               "' " + url() + " -d " + chatJson("chat-model", false));
  EXPECT_EQ(r.out, "431");
  run("head -c 2000000 /dev/zero | tr '\\0' 'a' > " + dir.path() + "/big.json");
  r = run("curl -sS --http2-prior-knowledge -o /dev/null -w '%{http_code}' --data-binary @" + dir.path() +
          "/big.json " + url());
  EXPECT_EQ(r.out, "413");
}

TEST_F(Http2Test, DrainLetsStreamsInFlightFinish) {
  startProxy(h2Config("http2"));
  CommandResult streamed;
  std::thread client([&] {
    streamed = run("curl -sSN --http2-prior-knowledge " + url() + " -d " + chatJson("slow-model", true) + " 2>&1");
  });
  std::this_thread::sleep_for(300ms);
  proxy->signal(SIGTERM);
  client.join();
  EXPECT_EQ(streamed.status, 0) << streamed.out;
  EXPECT_NE(streamed.out.find("data: [DONE]"), std::string::npos) << streamed.out;
  EXPECT_EQ(proxy->wait(10s), 0);
}

}  // namespace
}  // namespace infermesh::testing
