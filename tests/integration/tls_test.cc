// TLS termination and mTLS on listeners, end to end with curl and a test
// PKI generated at test time.
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/test_certs.h"

namespace infermesh::testing {
namespace {

using namespace std::chrono_literals;

CommandResult run(const std::string& cmd) { return runCommand(cmd); }

const char* kAppId = "spiffe://mesh.test/ns/default/sa/app";

class TlsTest : public ProxyTest {
 protected:
  void SetUp() override {
    pki = dir.path() + "/pki";
    std::filesystem::create_directories(pki);
    makeCa(pki, "ca");
    makeCa(pki, "other-ca");
    makeCert(pki, "ca", {"server", "localhost", {"localhost", "a.test"}, {"127.0.0.1"}, {}});
    makeCert(pki, "ca", {"b-server", "b.test", {"b.test"}, {}, {}});
    makeCert(pki, "ca", {"client", "app", {}, {}, {kAppId}});
    makeCert(pki, "ca", {"intruder", "intruder", {}, {}, {"spiffe://mesh.test/ns/other/sa/intruder"}});
    makeCert(pki, "ca", {"expired", "old", {}, {}, {kAppId}, -30, -1});
    makeCert(pki, "other-ca", {"foreign", "foreign", {}, {}, {kAppId}});
  }

  std::string tlsListener(const std::string& extra) const {
    return "  protocol: auto\n  tls:\n    certificates:\n"
           "      - {certFile: " + pki + "/server.crt, keyFile: " + pki + "/server.key}\n"
           "      - {certFile: " + pki + "/b-server.crt, keyFile: " + pki + "/b-server.key, serverNames: [b.test]}\n" +
           extra;
  }
  std::string curl(const std::string& args, const std::string& host = "localhost") const {
    return "curl -sS --max-time 10 --cacert " + pki + "/ca.crt --resolve " + host + ":" + std::to_string(port) +
           ":127.0.0.1 " + args + " https://" + host + ":" + std::to_string(port);
  }
  std::string client(const std::string& name) const {
    return "--cert " + pki + "/" + name + ".crt --key " + pki + "/" + name + ".key ";
  }
  static std::string curlChatBody() { return "-d '{\"model\":\"chat-model\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}' "; }

  std::string pki;
};

TEST_F(TlsTest, TerminatesTls12And13WithAlpnAndSni) {
  startProxy(baseConfig(tlsListener("")));
  // HTTP/1.1 and, through ALPN, HTTP/2 on the same TLS port.
  auto r = run(curl("--http1.1 -w '\\n%{http_version} %{http_code}' " + curlChatBody()) + "/v1/chat/completions");
  EXPECT_NE(r.out.find("\n1.1 200"), std::string::npos) << r.out;
  r = run(curl("--http2 -w '\\n%{http_version} %{http_code}' " + curlChatBody()) + "/v1/chat/completions");
  EXPECT_NE(r.out.find("\n2 200"), std::string::npos) << r.out;
  // Both protocol versions.
  r = run(curl("--tlsv1.2 --tls-max 1.2 -o /dev/null -w '%{http_code}' " + curlChatBody()) + "/v1/chat/completions");
  EXPECT_EQ(r.out, "200");
  r = run(curl("--tlsv1.3 -o /dev/null -w '%{http_code}' " + curlChatBody()) + "/v1/chat/completions");
  EXPECT_EQ(r.out, "200");
  // SNI picks the certificate.
  r = run(curl("-v -o /dev/null " + curlChatBody(), "b.test") + "/v1/chat/completions 2>&1");
  EXPECT_NE(r.out.find("subject: CN=b.test"), std::string::npos) << r.out;
  r = run(curl("-v -o /dev/null " + curlChatBody(), "a.test") + "/v1/chat/completions 2>&1");
  EXPECT_NE(r.out.find("subject: CN=localhost"), std::string::npos) << r.out;
  // Plain HTTP on a TLS listener is not served.
  EXPECT_EQ(chat("chat-model").status, 0);
  EXPECT_GE(metric("infermesh_tls_handshakes_total", "result=\"ok\""), 6);
}

TEST_F(TlsTest, MutualTlsVerifiesClientsAndPassesTheSpiffeIdOn) {
  startProxy(baseConfig(tlsListener("    clientCaFile: " + pki + "/ca.crt\n    allowedSpiffeIds: [" + kAppId + "]\n")));
  // A good client certificate: served, and its SPIFFE ID reaches the backend.
  auto r = run(curl(client("client")) + "/mock/echo");
  EXPECT_NE(r.out.find(std::string("\"x-forwarded-client-cert\":\"URI=") + kAppId + "\""), std::string::npos) << r.out;
  // A client cannot forge it.
  r = run(curl(client("client") + "-H 'x-forwarded-client-cert: URI=spiffe://evil/x' ") + "/mock/echo");
  EXPECT_EQ(r.out.find("spiffe://evil"), std::string::npos) << r.out;
  // Refused at the handshake: none, expired, another CA, a disallowed ID.
  for (const std::string& who : {std::string(), client("expired"), client("foreign"), client("intruder")}) {
    r = run(curl(who + "-o /dev/null -w '%{http_code}' " + curlChatBody()) + "/v1/chat/completions 2>&1");
    EXPECT_NE(r.status, 0) << who << ": " << r.out;
    EXPECT_EQ(r.out.find("200"), std::string::npos) << who << ": " << r.out;
  }
  EXPECT_EQ(metricReaching("infermesh_tls_handshakes_total", "result=\"no_certificate\"", 1), 1);
  EXPECT_EQ(metric("infermesh_tls_handshakes_total", "result=\"expired\""), 1);
  EXPECT_EQ(metric("infermesh_tls_handshakes_total", "result=\"unknown_ca\""), 1);
  EXPECT_EQ(metric("infermesh_tls_handshakes_total", "result=\"spiffe_id_not_allowed\""), 1);
}

TEST_F(TlsTest, OnlyOneWellFormedSpiffeIdIsAnIdentity) {
  // Each is signed by the trusted CA, so only the identity check can refuse it.
  makeCert(pki, "ca", {"two-ids", "two", {}, {}, {kAppId, "spiffe://mesh.test/ns/admin/sa/root"}});
  makeCert(pki, "ca", {"dots", "dots", {}, {}, {"spiffe://mesh.test/ns/default/../admin/sa/x"}});
  makeCert(pki, "ca", {"crlf", "crlf", {}, {}, {std::string(kAppId) + "\r\nx-injected: 1"}});
  makeCert(pki, "ca", {"xfcc", "xfcc", {}, {}, {std::string(kAppId) + ";By=spiffe://mesh.test/ns/admin,URI=spiffe://mesh.test/ns/admin"}});
  makeCert(pki, "ca", {"not-spiffe", "web", {}, {}, {"https://mesh.test/app"}});
  // The allowed prefix covers whole segments below it only.
  startProxy(baseConfig(tlsListener("    clientCaFile: " + pki + "/ca.crt\n    allowedSpiffeIds: ['spiffe://mesh.test/ns/default/']\n")));
  for (const char* who : {"two-ids", "dots", "crlf", "xfcc", "not-spiffe"}) {
    auto r = run(curl(client(who) + "-o /dev/null -w '%{http_code}' ") + "/mock/echo 2>&1");
    EXPECT_NE(r.status, 0) << who << ": " << r.out;
  }
  EXPECT_EQ(metricReaching("infermesh_tls_handshakes_total", "result=\"invalid_spiffe_id\"", 5), 5);
  // A well-formed ID under the prefix passes, and reaches the backend as one XFCC element.
  auto r = run(curl(client("client")) + "/mock/echo");
  EXPECT_NE(r.out.find(std::string("\"x-forwarded-client-cert\":\"URI=") + kAppId + "\""), std::string::npos) << r.out;
}

TEST_F(TlsTest, Tls12OffersForwardSecrecyOnlyUnlessConfigured) {
  makeCert(pki, "ca", {"rsa-server", "localhost", {"localhost"}, {"127.0.0.1"}, {}, -1, 30, true});
  const std::string rsa_listener = "  tls:\n    certificates: [{certFile: " + pki + "/rsa-server.crt, keyFile: " + pki +
                                   "/rsa-server.key}]\n";
  auto attempt = [&](const std::string& cipher) {
    return run(curl("--tlsv1.2 --tls-max 1.2 --ciphers " + cipher + " -o /dev/null -w '%{http_code}' " + curlChatBody()) +
               "/v1/chat/completions 2>/dev/null").out;
  };
  startProxy(baseConfig(rsa_listener));
  EXPECT_EQ(attempt("ECDHE-RSA-AES128-GCM-SHA256"), "200");
  EXPECT_EQ(attempt("ECDHE-RSA-CHACHA20-POLY1305"), "200");
  for (const char* weak : {"AES128-GCM-SHA256", "AES256-SHA256", "DHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA"})
    EXPECT_NE(attempt(weak), "200") << weak;
  // An operator who must serve an old client can say so.
  startProxy(baseConfig(rsa_listener + "    cipherSuites: 'ECDHE-RSA-AES128-GCM-SHA256:AES128-GCM-SHA256'\n"));
  EXPECT_EQ(attempt("AES128-GCM-SHA256"), "200");
}

TEST_F(TlsTest, RotatedCertificatesArePickedUpWithoutLosingRequests) {
  startProxy(baseConfig(tlsListener("")));
  auto serial = [&] {
    auto r = run(curl("-v -o /dev/null " + curlChatBody()) + "/v1/chat/completions 2>&1");
    auto at = r.out.find("start date: ");
    return at == std::string::npos ? std::string() : r.out.substr(at, 40);
  };
  const std::string before = serial();
  ASSERT_FALSE(before.empty());
  // New TLS connections keep coming (one handshake per request) while the
  // certificate is replaced: new files swapped in by rename, as a
  // Kubernetes secret update does.
  std::atomic<bool> stop{false};
  int ok = 0, failed = 0;
  std::thread client([&] {
    while (!stop) {
      auto r = run(curl("-o /dev/null -w '%{http_code}' " + curlChatBody()) + "/v1/chat/completions");
      (r.out == "200" ? ok : failed)++;
    }
  });
  std::this_thread::sleep_for(300ms);
  makeCert(pki, "ca", {"server-next", "localhost", {"localhost"}, {"127.0.0.1"}, {}, -2, 60});
  std::filesystem::rename(pki + "/server-next.key", pki + "/server.key.new");
  std::filesystem::rename(pki + "/server-next.crt", pki + "/server.crt.new");
  std::filesystem::rename(pki + "/server.key.new", pki + "/server.key");
  std::filesystem::rename(pki + "/server.crt.new", pki + "/server.crt");
  EXPECT_EQ(metricReaching("infermesh_tls_certificate_reloads_total", "result=\"ok\"", 1), 1);
  std::this_thread::sleep_for(300ms);
  stop = true;
  client.join();
  EXPECT_NE(serial(), before) << "new connections get the new certificate";
  EXPECT_GT(ok, 5);
  EXPECT_EQ(failed, 0);
}

// A mesh hop: this proxy (the app's sidecar) originates mTLS to a node
// proxy that requires it, verifies the node's SPIFFE ID, negotiates HTTP/2
// with ALPN and resumes sessions.
TEST_F(TlsTest, UpstreamMutualTlsToANodeProxy) {
  const std::string node_id = "spiffe://mesh.test/ns/infra/sa/node";
  makeCert(pki, "ca", {"node", "node", {"localhost"}, {"127.0.0.1"}, {node_id}});
  TempDir node_dir;
  node_dir.write("node.yaml",
                 "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: node}\nspec:\n"
                 "  address: 127.0.0.1:0\n  protocol: auto\n  filters: [{name: router}]\n"
                 "  accessLog: {path: " + node_dir.path() + "/access.log}\n"
                 "  tls: {certificates: [{certFile: " + pki + "/node.crt, keyFile: " + pki + "/node.key}], clientCaFile: " +
                     pki + "/ca.crt, allowedSpiffeIds: [" + kAppId + "]}\n"
                 "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: chat-model}\n"
                 "spec: {endpoints: [{address: '" + fast_a.address() + "'}]}\n"
                 "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: slow-model}\n"
                 "spec: {endpoints: [{address: '" + slow.address() + "'}]}\n"
                 "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: echo}\n"
                 "spec: {match: {pathPrefix: /mock/}, model: chat-model}\n"
                 "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: api}\nspec: {match: {pathPrefix: /v1/}}\n");
  auto node = Process::start({bin_dir + "/proxy/infermesh-proxy", "--config", node_dir.path(), "--admin", "127.0.0.1:0"},
                             node_dir.path() + "/proxy.log");
  const int node_port = portOf(node->waitForLine("listener node "));
  ASSERT_GT(node_port, 0);
  const std::string node_addr = "127.0.0.1:" + std::to_string(node_port);
  auto remote = [&](const std::string& name, const std::string& extra) {
    return "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: " + name + "}\n"
           "spec: {upstreamModel: chat-model, endpoints: [{address: '" + node_addr + "'}], " + extra + "}\n"
           "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: " + name + "}\n"
           "spec: {order: 10, match: {headers: [{name: x-hop, value: " + name + "}]}, model: " + name + "}\n";
  };
  const std::string tls = "caFile: " + pki + "/ca.crt, certFile: " + pki + "/client.crt, keyFile: " + pki + "/client.key";
  startProxy(baseConfig() +
             remote("hop", "upstreamProtocol: auto, upstreamTls: {" + tls + ", spiffeIds: ['" + node_id + "']}") +
             remote("hop-h1", "upstreamProtocol: http1, upstreamTls: {" + tls + ", spiffeIds: ['" + node_id + "']}") +
             remote("wrong-node", "upstreamTls: {" + tls + ", spiffeIds: ['spiffe://mesh.test/ns/infra/sa/other']}") +
             remote("no-client-cert", "upstreamTls: {caFile: " + pki + "/ca.crt}") +
             remote("checked-hop", "upstreamTls: {" + tls + "}, healthCheck: {path: /mock/stats, interval: 100ms}"));
  // Through the hop: HTTP/2 by ALPN, and the node sees the app's identity.
  auto r = httpRequest(port, "GET", "/mock/echo", "", {{"x-hop", "hop"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find(std::string("\"x-forwarded-client-cert\":\"URI=") + kAppId + "\""), std::string::npos) << r.body;
  r = httpRequest(port, "POST", "/v1/chat/completions", chatBody("chat-model", false), {{"x-hop", "hop"}});
  EXPECT_EQ(r.status, 200) << r.body;
  // One x-infermesh-model, this hop's; the node's is in the hop header.
  EXPECT_EQ(r.headers["x-infermesh-model"], "hop");
  EXPECT_EQ(r.headers["x-infermesh-hops"], "chat-model");
  std::this_thread::sleep_for(200ms);  // the access log is written asynchronously
  std::string log;
  if (FILE* f = std::fopen((node_dir.path() + "/access.log").c_str(), "r")) {
    std::array<char, 8192> buf;
    while (std::size_t n = std::fread(buf.data(), 1, buf.size(), f)) log.append(buf.data(), n);
    std::fclose(f);
  }
  EXPECT_NE(log.find("\"protocol\":\"HTTP/2\""), std::string::npos) << log;
  EXPECT_NE(log.find(std::string("\"identity\":\"") + kAppId + "\""), std::string::npos) << log;
  // Over HTTP/1.1, new connections resume the first one's session.
  EXPECT_EQ(httpRequest(port, "POST", "/v1/chat/completions", chatBody("x", false), {{"x-hop", "hop-h1"}}).status, 200);
  std::vector<std::thread> parallel;
  for (int i = 0; i < 3; ++i)
    parallel.emplace_back([&] {
      EXPECT_EQ(httpRequest(port, "POST", "/v1/chat/completions", chatBody("x", false), {{"x-hop", "hop-h1"}}).status,
                200);
    });
  for (auto& t : parallel) t.join();
  EXPECT_GE(metric("infermesh_upstream_tls_handshakes_total", "result=\"resumed\""), 1);
  // Active health checks go over the same TLS as the traffic.
  EXPECT_TRUE([&] {
    for (int i = 0; i < 100; ++i) {
      if (metric("infermesh_health_checks_total", "result=\"passed\"") >= 2) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  }());
  EXPECT_EQ(metric("infermesh_endpoints_unhealthy"), 0);
  // A node with the wrong identity, or no client certificate: no hop.
  r = httpRequest(port, "POST", "/v1/chat/completions", chatBody("x", false), {{"x-hop", "wrong-node"}});
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_NE(r.body.find("TLS handshake"), std::string::npos) << r.body;
  // Without a client certificate the node refuses the hop (with TLS 1.3 the
  // client learns it only when it reads, so a 502 rather than a 503).
  r = httpRequest(port, "POST", "/v1/chat/completions", chatBody("x", false), {{"x-hop", "no-client-cert"}});
  EXPECT_GE(r.status, 502) << r.body;
  EXPECT_LE(r.status, 503) << r.body;
  EXPECT_GE(metric("infermesh_upstream_tls_handshakes_total", "result=\"failed\""), 1);
}

TEST_F(TlsTest, ABrokenCertificateIsAClearStartupError) {
  dir.write("config.yaml", baseConfig("  tls: {certificates: [{certFile: " + pki + "/missing.crt, keyFile: " + pki +
                                      "/server.key}]}\n"));
  auto p = Process::start({bin_dir + "/proxy/infermesh-proxy", "--config", dir.path(), "--admin", "127.0.0.1:0"},
                          dir.path() + "/proxy.log");
  EXPECT_EQ(p->wait(10s), 1);
  std::string log;
  if (FILE* f = std::fopen((dir.path() + "/proxy.log").c_str(), "r")) {
    std::array<char, 4096> buf;
    while (std::size_t n = std::fread(buf.data(), 1, buf.size(), f)) log.append(buf.data(), n);
    std::fclose(f);
  }
  EXPECT_NE(log.find("Listener/main: spec.tls: " + pki + "/missing.crt"), std::string::npos) << log;
}

}  // namespace
}  // namespace infermesh::testing
