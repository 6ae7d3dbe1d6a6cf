// infermesh-control's sidecar injector as the Kubernetes API server calls
// it: AdmissionReview objects POSTed over HTTPS by curl (a client the
// project did not write), answers checked, the serving certificate rotated
// under it, and bad requests answered without hurting the next.
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/test_certs.h"

namespace infermesh::testing {
namespace {

using namespace std::chrono_literals;

const std::string kHost = "infermesh-control.infermesh-system.svc";

std::string reviewOf(const std::string& uid, const std::string& pod) {
  return R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":")" + uid +
         R"(","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},)"
         R"("namespace":"shop","operation":"CREATE","userInfo":{"username":"admin"},"object":)" + pod +
         R"(,"dryRun":false}})";
}

const std::string kPod =
    R"({"apiVersion":"v1","kind":"Pod","metadata":{"name":"shop-1","namespace":"shop","labels":{"app":"shop"}},)"
    R"("spec":{"serviceAccountName":"shop","containers":[{"name":"app","image":"shop:3",)"
    R"("ports":[{"containerPort":8080}]}]}})";

class WebhookTest : public ::testing::Test {
 protected:
  void SetUp() override {
    pki = dir.path() + "/pki";
    std::filesystem::create_directories(pki);
    makeCa(pki, "ca");
    makeCert(pki, "ca", {.name = "serving", .common_name = kHost, .dns = {kHost}});
    std::filesystem::create_directories(dir.path() + "/config");
    write(dir.path() + "/inject.yaml",
          "image: registry.example/infermesh:1.0\ncontrolPlane: infermesh-control.infermesh-system.svc:18000\n"
          "interceptPorts: [8000, 443]\nexcludeCidrs: [10.96.0.1/32]\n");
    control = Process::start({binariesDir() + "/controlplane/infermesh-control", "--config-dir", dir.path() + "/config",
                              "--xds-address", "127.0.0.1:0", "--admin-address", "127.0.0.1:0", "--webhook-address",
                              "127.0.0.1:0", "--webhook-cert", pki + "/serving.crt", "--webhook-key",
                              pki + "/serving.key", "--inject-config", dir.path() + "/inject.yaml"},
                             dir.path() + "/control.log");
    webhook = portOf(control->waitForLine("webhook "));
    admin = portOf(control->waitForLine("admin "));
    ASSERT_GT(webhook, 0) << log();
    ASSERT_GT(admin, 0);
  }

  static void write(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp";
    { std::ofstream(tmp) << text; }
    std::filesystem::rename(tmp, path);
  }
  std::string log() const {
    std::ifstream in(dir.path() + "/control.log");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  // curl against the webhook with the given CA; `-w` appends the status.
  CommandResult post(const std::string& path, const std::string& body, const std::string& ca = "ca",
                     const std::string& extra = "") {
    const std::string file = dir.path() + "/body-" + std::to_string(++bodies) + ".json";
    write(file, body);
    return runCommand("curl -sS --max-time 10 --cacert " + pki + "/" + ca + ".crt --resolve " + kHost + ":" +
                      std::to_string(webhook) + ":127.0.0.1 -H 'Content-Type: application/json' --data-binary @" +
                      file + " -w '\\n%{http_code}' " + extra + " https://" + kHost + ":" + std::to_string(webhook) +
                      path + " 2>&1");
  }
  double metric(const std::string& series) {
    const std::string body = httpGetBody(admin, "/metrics");
    const auto at = body.find("\n" + series + " ");
    return at == std::string::npos ? -1 : std::stod(body.substr(at + series.size() + 2));
  }
  static std::string status(const CommandResult& r) { return r.out.substr(r.out.rfind('\n') + 1); }

  TempDir dir;
  std::string pki;
  std::unique_ptr<Process> control;
  int webhook = 0;
  int admin = 0;
  int bodies = 0;
};

TEST_F(WebhookTest, APodReviewIsAnsweredWithAPatchAndCounted) {
  const auto r = post("/inject", reviewOf("uid-1", kPod));
  ASSERT_EQ(status(r), "200") << r.out;
  EXPECT_NE(r.out.find(R"("response":{"uid":"uid-1","allowed":true,"patchType":"JSONPatch","patch":")"),
            std::string::npos)
      << r.out;
  // The patch decodes (base64 of a JSON array of add operations).
  const auto start = r.out.find("\"patch\":\"") + 9;
  write(dir.path() + "/patch.b64", r.out.substr(start, r.out.find('"', start) - start));
  const auto patch = runCommand("base64 -d " + dir.path() + "/patch.b64");
  ASSERT_EQ(patch.status, 0);
  EXPECT_EQ(patch.out.rfind(R"([{"op":"add","path":"/spec/containers/0","value":{"name":"infermesh-proxy")", 0), 0u)
      << patch.out;
  EXPECT_NE(patch.out.find(R"("command":["infermesh-iptables"])"), std::string::npos);

  // Opted out: allowed, no patch.
  const std::string opted =
      R"({"metadata":{"name":"batch","annotations":{"infermesh.io/inject":"false"}},"spec":{"containers":[{"name":"x"}]}})";
  const auto o = post("/inject", reviewOf("uid-2", opted));
  EXPECT_EQ(status(o), "200");
  EXPECT_NE(o.out.find(R"({"uid":"uid-2","allowed":true})"), std::string::npos) << o.out;
  EXPECT_EQ(metric(R"(infermesh_control_injections_total{result="injected"})"), 1);
  EXPECT_EQ(metric(R"(infermesh_control_injections_total{result="skipped"})"), 1);
  EXPECT_NE(log().find("opted out"), std::string::npos);
}

TEST_F(WebhookTest, BadRequestsGetClearAnswersAndTheServerKeepsServing) {
  auto r = post("/inject", "{not json");
  EXPECT_EQ(status(r), "400") << r.out;
  EXPECT_NE(r.out.find(R"("allowed":false,"status":{"code":400,"message":"infermesh sidecar injector: the body is not a JSON object"})"),
            std::string::npos)
      << r.out;
  r = post("/mutate", reviewOf("u", kPod));
  EXPECT_EQ(status(r), "404") << r.out;
  r = post("/inject", "", "ca", "-X GET");
  EXPECT_EQ(status(r), "405") << r.out;
  // Past the body limit: 413, the connection closed, nothing parsed.
  r = post("/inject", std::string(4 << 20, ' '));
  EXPECT_EQ(status(r), "413") << r.out;
  // Plain HTTP and a garbage handshake on the TLS port are counted, not fatal.
  EXPECT_NE(runCommand("curl -sS --max-time 5 http://127.0.0.1:" + std::to_string(webhook) + "/inject -d x 2>&1").status, 0);
  EXPECT_TRUE(eventually([&] { return metric(R"(infermesh_control_webhook_tls_total{event="handshake_failed"})") >= 1; }));
  // A client that does not trust the CA refuses the server.
  makeCa(pki, "other");
  EXPECT_NE(post("/inject", reviewOf("u", kPod), "other").out.find("certificate"), std::string::npos);
  EXPECT_EQ(metric(R"(infermesh_control_injections_total{result="error"})"), 1);
  r = post("/inject", reviewOf("after", kPod));
  EXPECT_EQ(status(r), "200") << r.out;
  EXPECT_TRUE(control->running());
}

TEST_F(WebhookTest, ARotatedCertificateIsServedWithoutARestart) {
  ASSERT_EQ(status(post("/inject", reviewOf("before", kPod))), "200");
  // A key that does not load: the old certificate keeps serving.
  write(pki + "/serving.key", "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n");
  ASSERT_TRUE(eventually([&] { return metric(R"(infermesh_control_webhook_tls_total{event="cert_reload_failed"})") >= 1; },
                         10s));
  EXPECT_EQ(status(post("/inject", reviewOf("during", kPod))), "200");
  // A new pair from a new CA (the Secret rotated): served from the next poll.
  const std::string next = dir.path() + "/next";
  std::filesystem::create_directories(next);
  makeCa(next, "ca2");
  makeCert(next, "ca2", {.name = "serving", .common_name = kHost, .dns = {kHost}});
  std::filesystem::copy_file(next + "/ca2.crt", pki + "/ca2.crt");
  std::filesystem::copy_file(next + "/serving.crt", pki + "/serving.crt.new");
  std::filesystem::copy_file(next + "/serving.key", pki + "/serving.key.new");
  std::filesystem::rename(pki + "/serving.key.new", pki + "/serving.key");
  std::filesystem::rename(pki + "/serving.crt.new", pki + "/serving.crt");
  ASSERT_TRUE(eventually([&] { return status(post("/inject", reviewOf("after", kPod), "ca2")) == "200"; }, 10s))
      << log();
  EXPECT_GE(metric(R"(infermesh_control_webhook_tls_total{event="cert_reloaded"})"), 1);
  EXPECT_NE(post("/inject", reviewOf("old", kPod), "ca").out.find("certificate"), std::string::npos);
}

TEST(WebhookFlagsTest, TheInjectorNeedsAllItsFlagsAndAValidConfig) {
  TempDir dir;
  std::filesystem::create_directories(dir.path() + "/config");
  const std::string control = binariesDir() + "/controlplane/infermesh-control";
  auto half = Process::start({control, "--config-dir", dir.path() + "/config", "--webhook-address", "127.0.0.1:0"},
                             dir.path() + "/half.log");
  EXPECT_EQ(half->wait(10s), 2);
  { std::ofstream(dir.path() + "/inject.yaml") << "image: x\ncontrolPlane: cp:1\n"; }
  makeCa(dir.path(), "ca");
  makeCert(dir.path(), "ca", {.name = "s", .common_name = "s", .dns = {"s"}});
  auto bad = Process::start({control, "--config-dir", dir.path() + "/config", "--webhook-address", "127.0.0.1:0",
                             "--webhook-cert", dir.path() + "/s.crt", "--webhook-key", dir.path() + "/s.key",
                             "--inject-config", dir.path() + "/inject.yaml"},
                            dir.path() + "/bad.log");
  EXPECT_EQ(bad->wait(10s), 2);
  std::ifstream in(dir.path() + "/bad.log");
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("interceptPorts or interceptCidrs"), std::string::npos) << text.str();
}

}  // namespace
}  // namespace infermesh::testing
