// HTTP/1.1 requests that nginx refuses are refused here too, before they
// become a stream: each gets its local answer and a counter, and nothing
// reaches a model server.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "tests/integration/proxy_fixture.h"

namespace infermesh::testing {
namespace {

using namespace std::chrono_literals;

class Http1StrictTest : public ProxyTest {
 protected:
  int modelRequests() { return mockStat(fast_a, "requests") + mockStat(fast_b, "requests"); }

  // A chat request with `headers` (each "name: value") after Host.
  static std::string chatRequest(const std::vector<std::string>& headers, const std::string& host = "host: x\r\n") {
    const std::string body = chatBody("chat-model", false);
    std::string raw = "POST /v1/chat/completions HTTP/1.1\r\n" + host;
    for (const auto& h : headers) raw += h + "\r\n";
    return raw + "content-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  }

  static std::vector<std::string> manyHeaders(int n) {
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) out.push_back("x-h-" + std::to_string(i) + ": v");
    return out;
  }

  HttpResponse send(const std::string& raw) {
    HttpConnection conn(port);
    conn.sendRaw(raw);
    return conn.read(5s);
  }
};

TEST_F(Http1StrictTest, RequestsNginxRefusesAreRefusedLocally) {
  startProxy(baseConfig());
  const std::string body = chatBody("chat-model", false);
  const std::string ext(1500, 'a');
  struct Case {
    std::string name;
    std::string raw;
    int status;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no Host", chatRequest({}, ""), 400, "missing Host header"},
      {"two Hosts", chatRequest({"host: y"}), 400, "more than one Host header"},
      {"obs-fold", chatRequest({"x-folded: a", " b"}), 400, "obsolete line folding"},
      {"obs-fold with a tab", chatRequest({"x-folded: a", "\tb"}), 400, "obsolete line folding"},
      {"chunk extension over 1 KiB",
       "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" +
           [&] {
             char size[16];
             std::snprintf(size, sizeof size, "%zx", body.size());
             return std::string(size);
           }() +
           ";e=" + ext + "\r\n" + body + "\r\n0\r\n\r\n",
       400, "chunk extensions exceed 1024 bytes"},
      {"2,000 header lines", chatRequest(manyHeaders(2000)), 431, "more than 100 request header fields"},
  };
  const int before = modelRequests();
  for (const auto& c : cases) {
    auto r = send(c.raw);
    EXPECT_EQ(r.status, c.status) << c.name << ": " << r.error << r.body;
    EXPECT_NE(r.body.find("{\"error\":{\"message\":"), std::string::npos) << c.name << ": " << r.body;
    EXPECT_NE(r.body.find(c.message), std::string::npos) << c.name << ": " << r.body;
  }
  EXPECT_EQ(modelRequests(), before) << "a refused request reached a model server";
  EXPECT_EQ(metric("infermesh_downstream_errors_total", "reason=\"bad_request\""), 5);
  EXPECT_EQ(metric("infermesh_downstream_errors_total", "reason=\"header_too_large\""), 1);
}

TEST_F(Http1StrictTest, OrdinaryRequestsStillPass) {
  startProxy(baseConfig());
  const std::string body = chatBody("chat-model", false);
  char size[16];
  std::snprintf(size, sizeof size, "%zx", body.size());
  const int before = modelRequests();
  // HTTP/1.0 may leave Host out.
  const std::string http10 = "POST /v1/chat/completions HTTP/1.0\r\ncontent-length: " + std::to_string(body.size()) +
                             "\r\n\r\n" + body;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"plain", chatRequest({"x-app: 1"})},
      {"HTTP/1.0 without Host", http10},
      {"100 header lines, the limit", chatRequest(manyHeaders(98))},  // + host and content-length
      {"a short chunk extension",
       "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n" + std::string(size) +
           ";name=value\r\n" + body + "\r\n0\r\n\r\n"},
  };
  for (const auto& [name, raw] : cases) {
    auto r = send(raw);
    EXPECT_EQ(r.status, 200) << name << ": " << r.error << r.body;
  }
  // Keep-alive survives the checks: two requests on one connection.
  HttpConnection conn(port);
  for (int i = 0; i < 2; ++i) {
    conn.sendRaw(chatRequest({}));
    EXPECT_EQ(conn.read(5s).status, 200) << "request " << i;
  }
  EXPECT_EQ(modelRequests(), before + static_cast<int>(cases.size()) + 2);
  EXPECT_EQ(metric("infermesh_downstream_errors_total"), 0);
}

TEST_F(Http1StrictTest, MaxRequestHeadersIsConfigurable) {
  std::string config = baseConfig();
  const std::string from = "idleTimeout: 5s}";
  config.replace(config.find(from), from.size(), "idleTimeout: 5s, maxRequestHeaders: 300}");
  startProxy(config);
  auto r = send(chatRequest(manyHeaders(250)));
  EXPECT_EQ(r.status, 200) << r.error << r.body;
  r = send(chatRequest(manyHeaders(300)));
  EXPECT_EQ(r.status, 431) << r.error << r.body;
  EXPECT_NE(r.body.find("more than 300 request header fields"), std::string::npos) << r.body;
}

TEST_F(Http1StrictTest, Http2HeaderFieldsAreCountedToo) {
  std::string config = baseConfig();
  const std::string from = "  limits: {";
  config.replace(config.find(from), from.size(), "  protocol: auto\n  limits: {maxRequestHeaders: 20, ");
  startProxy(config);
  auto curl = [&](int headers) {
    std::string cmd = "curl -sS --http2-prior-knowledge -o /dev/null -w '%{http_code}'";
    for (int i = 0; i < headers; ++i) cmd += " -H 'x-h-" + std::to_string(i) + ": v'";
    return runCommand(cmd + " http://127.0.0.1:" + std::to_string(port) +
                      "/v1/chat/completions -d '{\"model\":\"chat-model\",\"messages\":[]}'")
        .out;
  };
  // curl adds user-agent, accept, content-length and content-type.
  EXPECT_EQ(curl(10), "200");
  EXPECT_EQ(curl(30), "431");
  EXPECT_EQ(metric("infermesh_downstream_errors_total", "reason=\"header_too_large\""), 1);
}

}  // namespace
}  // namespace infermesh::testing
