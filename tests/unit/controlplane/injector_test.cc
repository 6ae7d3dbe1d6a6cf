#include "controlplane/injector.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <simdjson.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace infermesh::controlplane {
namespace {

InjectorConfig config() {
  InjectorConfig c;
  c.image = "registry.example/infermesh:1.0";
  c.control_plane = "infermesh-control.infermesh-system.svc:18000";
  c.intercept_ports = {8000, 443};
  c.exclude_cidrs = {"10.96.0.1/32"};
  return c;
}

// An AdmissionReview as the API server sends it for a pod CREATE.
std::string reviewOf(const std::string& pod, const std::string& operation = "CREATE",
                     const std::string& kind = R"({"group":"","version":"v1","kind":"Pod"})") {
  return R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{)"
         R"("uid":"705ab4f5-6393-11e8-b7cc-42010a800002","kind":)" + kind +
         R"(,"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"shop",)"
         R"("operation":")" + operation + R"(","userInfo":{"username":"system:serviceaccount:kube-system:replicaset-controller"},)"
         R"("object":)" + pod + R"(,"oldObject":null,"dryRun":false}})";
}

const std::string kPod =
    R"({"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"shop-7d4b9-","namespace":"shop",)"
    R"("labels":{"app":"shop"}},"spec":{"serviceAccountName":"shop","containers":[{"name":"app","image":"shop:3"}]}})";

std::string decodeBase64(std::string_view in) {
  std::string out(in.size() / 4 * 3 + 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  EXPECT_GE(n, 0);
  out.resize(static_cast<std::size_t>(n));
  while (!out.empty() && out.back() == '\0') out.pop_back();  // EVP_DecodeBlock counts the padding
  return out;
}

struct Op {
  std::string op, path, value;  // value as minified JSON
};

// The response's fields and, when there is one, its decoded JSONPatch.
struct Parsed {
  std::string uid;
  bool allowed = false;
  std::string message;
  std::vector<Op> ops;
};

Parsed parse(const std::string& body) {
  static simdjson::dom::parser parser;
  Parsed p;
  simdjson::dom::element doc = parser.parse(body);
  EXPECT_EQ(std::string_view(doc["apiVersion"]), "admission.k8s.io/v1");
  EXPECT_EQ(std::string_view(doc["kind"]), "AdmissionReview");
  simdjson::dom::element r = doc["response"];
  p.uid = std::string(std::string_view(r["uid"]));
  p.allowed = bool(r["allowed"]);
  std::string_view message;
  if (r["status"]["message"].get(message) == simdjson::SUCCESS) p.message = message;
  std::string_view patch;
  if (r["patch"].get(patch) == simdjson::SUCCESS) {
    EXPECT_EQ(std::string_view(r["patchType"]), "JSONPatch");
    const std::string json = decodeBase64(patch);
    simdjson::dom::parser patch_parser;
    for (simdjson::dom::element op : simdjson::dom::array(patch_parser.parse(json))) {
      p.ops.push_back({std::string(std::string_view(op["op"])), std::string(std::string_view(op["path"])),
                       simdjson::minify(op["value"])});
    }
  }
  return p;
}

const Op* find(const Parsed& p, const std::string& path) {
  for (const auto& op : p.ops)
    if (op.path == path) return &op;
  return nullptr;
}

TEST(InjectorTest, APodCreateGetsTheProxyTheInterceptionStepAndItsVolumes) {
  const ReviewAnswer a = review(reviewOf(kPod), config());
  EXPECT_EQ(a.outcome, ReviewOutcome::Injected);
  EXPECT_EQ(a.http_status, 200u);
  const Parsed p = parse(a.body);
  EXPECT_EQ(p.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
  EXPECT_TRUE(p.allowed);
  for (const auto& op : p.ops) EXPECT_EQ(op.op, "add") << op.path;

  const Op* proxy = find(p, "/spec/containers/0");
  ASSERT_NE(proxy, nullptr);
  const std::string& c = proxy->value;
  EXPECT_NE(c.find(R"("name":"infermesh-proxy","image":"registry.example/infermesh:1.0")"), std::string::npos) << c;
  EXPECT_NE(c.find(R"("--control-plane","infermesh-control.infermesh-system.svc:18000")"), std::string::npos) << c;
  // The labels the proxy announces: its role, its namespace, its
  // service account (from the pod spec) and its node (from the downward API).
  EXPECT_NE(c.find(R"x("--node-labels","role=sidecar,namespace=$(POD_NAMESPACE),service-account=shop,node=$(NODE_NAME)")x"),
            std::string::npos)
      << c;
  EXPECT_NE(c.find(R"("fieldPath":"spec.nodeName")"), std::string::npos) << c;
  EXPECT_NE(c.find(R"("readinessProbe":{"httpGet":{"path":"/ready","port":15000})"), std::string::npos) << c;
  EXPECT_NE(c.find(R"("livenessProbe":{"httpGet":{"path":"/healthz","port":15000})"), std::string::npos) << c;
  EXPECT_NE(c.find(R"("runAsUser":1337,"runAsGroup":1337,"runAsNonRoot":true,"readOnlyRootFilesystem":true)"),
            std::string::npos)
      << c;
  EXPECT_NE(c.find(R"("resources":{"requests":{"cpu":"100m","memory":"64Mi"},"limits":{"memory":"256Mi"}})"),
            std::string::npos)
      << c;
  EXPECT_NE(c.find(R"("mountPath":"/etc/infermesh/certs")"), std::string::npos) << c;

  const Op* init = find(p, "/spec/initContainers");
  ASSERT_NE(init, nullptr);
  EXPECT_NE(init->value.find(R"("command":["infermesh-iptables"],"args":["install","--proxy-uid","1337",)"
                             R"("--outbound-port","15001","--ports","8000,443","--exclude-cidrs","10.96.0.1/32"])"),
            std::string::npos)
      << init->value;
  EXPECT_NE(init->value.find(R"("add":["NET_ADMIN","NET_RAW"])"), std::string::npos) << init->value;

  const Op* vols = find(p, "/spec/volumes");
  ASSERT_NE(vols, nullptr);
  EXPECT_NE(vols->value.find(R"("serviceAccountToken":{"audience":"infermesh","expirationSeconds":3600)"),
            std::string::npos)
      << vols->value;

  const Op* ann = find(p, "/metadata/annotations");
  ASSERT_NE(ann, nullptr);
  EXPECT_EQ(ann->value,
            R"({"infermesh.io/status":"injected","kubectl.kubernetes.io/default-container":"app",)"
            R"("prometheus.io/path":"/metrics","prometheus.io/port":"15000","prometheus.io/scrape":"true"})");
}

TEST(InjectorTest, ExistingListsAndAnnotationsAreAppendedToNotReplaced) {
  const std::string pod =
      R"({"metadata":{"name":"web","annotations":{"prometheus.io/scrape":"false","team/owner":"a"}},)"
      R"("spec":{"initContainers":[{"name":"migrate"}],"volumes":[{"name":"data","emptyDir":{}}],)"
      R"("containers":[{"name":"web"},{"name":"cache"}]}})";
  const Parsed p = parse(review(reviewOf(pod), config()).body);
  EXPECT_EQ(find(p, "/spec/initContainers"), nullptr);
  ASSERT_NE(find(p, "/spec/initContainers/-"), nullptr);
  EXPECT_EQ(find(p, "/spec/volumes"), nullptr);
  int volume_adds = 0;
  for (const auto& op : p.ops) volume_adds += op.path == "/spec/volumes/-";
  EXPECT_EQ(volume_adds, 3);
  // Keys with '/' are escaped as RFC 6901 says.
  const Op* status = find(p, "/metadata/annotations/infermesh.io~1status");
  ASSERT_NE(status, nullptr);
  EXPECT_EQ(status->value, R"("injected")");
  // The app asked not to be scraped: left as it is.
  EXPECT_EQ(find(p, "/metadata/annotations/prometheus.io~1scrape"), nullptr);
  const Op* def = find(p, "/metadata/annotations/kubectl.kubernetes.io~1default-container");
  ASSERT_NE(def, nullptr);
  EXPECT_EQ(def->value, R"("web")");
}

TEST(InjectorTest, APodThatOptedOutOrIsInjectedIsAllowedUnchanged) {
  const std::vector<std::string> pods = {
      R"({"metadata":{"name":"a","annotations":{"infermesh.io/inject":"false"}},"spec":{"containers":[{"name":"x"}]}})",
      R"({"metadata":{"name":"b","annotations":{"infermesh.io/status":"injected"}},"spec":{"containers":[{"name":"x"}]}})",
      R"({"metadata":{"name":"c"},"spec":{"containers":[{"name":"infermesh-proxy"},{"name":"x"}]}})",
  };
  for (const auto& pod : pods) {
    const ReviewAnswer a = review(reviewOf(pod), config());
    EXPECT_EQ(a.outcome, ReviewOutcome::Skipped) << pod;
    const Parsed p = parse(a.body);
    EXPECT_TRUE(p.allowed);
    EXPECT_TRUE(p.ops.empty());
  }
  // Injecting the injected pod again adds nothing: the patch is idempotent
  // through the status annotation it writes.
  EXPECT_NE(review(reviewOf(pods[1]), config()).reason.find("already injected"), std::string::npos);
  // Any other value of the annotation does not opt out.
  const std::string yes =
      R"({"metadata":{"name":"d","annotations":{"infermesh.io/inject":"true"}},"spec":{"containers":[{"name":"x"}]}})";
  EXPECT_EQ(review(reviewOf(yes), config()).outcome, ReviewOutcome::Injected);
}

TEST(InjectorTest, OtherObjectsAndOperationsAreAllowedUntouched) {
  EXPECT_EQ(review(reviewOf(kPod, "UPDATE"), config()).outcome, ReviewOutcome::Skipped);
  EXPECT_EQ(review(reviewOf(R"({"metadata":{"name":"d"}})", "CREATE",
                            R"({"group":"apps","version":"v1","kind":"Deployment"})"),
                   config())
                .outcome,
            ReviewOutcome::Skipped);
}

TEST(InjectorTest, MalformedReviewsGetAnAdmissionErrorNotACrash) {
  struct Case {
    std::string body;
    unsigned http;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"", 400, "not a JSON object"},
      {"{\"apiVersion\":", 400, "not a JSON object"},
      {"[1,2]", 400, "not a JSON object"},
      {R"({"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}})", 400,
       "expected an admission.k8s.io/v1 AdmissionReview"},
      {R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"})", 400, "has no request"},
      {R"({"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{}}})", 400,
       "request.uid is missing"},
      {reviewOf(R"("a string")"), 200, "request.object is not a pod"},
      {reviewOf(R"({"metadata":{"name":"p"},"spec":{}})"), 200, "spec.containers"},
      {reviewOf(R"({"metadata":{"name":"p"},"spec":{"containers":[{"image":"x"}]}})"), 200, "spec.containers"},
      {reviewOf(R"({"metadata":{"annotations":{"a":1}},"spec":{"containers":[{"name":"x"}]}})"), 200,
       "annotation \"a\" is not a string"},
      {reviewOf(R"({"metadata":{},"spec":{"containers":[{"name":"x"}],"volumes":{}}})"), 200, "spec.volumes"},
  };
  for (const auto& c : cases) {
    const ReviewAnswer a = review(c.body, config());
    EXPECT_EQ(a.outcome, ReviewOutcome::Error) << c.body;
    EXPECT_EQ(a.http_status, c.http) << c.body;
    EXPECT_NE(a.reason.find(c.message), std::string::npos) << c.body << " -> " << a.reason;
    const Parsed p = parse(a.body);
    EXPECT_FALSE(p.allowed);
    EXPECT_NE(p.message.find(c.message), std::string::npos) << p.message;
  }
  // The uid is echoed once the review has one, as the API server requires.
  EXPECT_EQ(parse(review(reviewOf(R"({"spec":{}})"), config()).body).uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
}

class InjectorConfigTest : public ::testing::Test {
 protected:
  std::string write(const std::string& text) {
    const auto path = std::filesystem::temp_directory_path() /
                      ("inject-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
                       ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".yaml");
    std::ofstream(path) << text;
    paths_.push_back(path);
    return path.string();
  }
  void TearDown() override {
    for (const auto& p : paths_) std::filesystem::remove(p);
  }

 private:
  std::vector<std::filesystem::path> paths_;
};

TEST_F(InjectorConfigTest, AFullFileIsRead) {
  InjectorConfig c;
  std::string error;
  ASSERT_TRUE(loadInjectorConfig(write("image: img:2\ncontrolPlane: cp:18000\nadminPort: 16000\noutboundPort: 16001\n"
                                       "proxyUid: 2000\nworkers: 1\ninterceptCidrs: [10.8.0.0/16, 'fd00::/8']\n"
                                       "excludeCidrs: [10.8.0.1/32]\nresources: {requests: {cpu: 50m}, limits: {memory: 128Mi}}\n"
                                       "nodeLabels: {role: sidecar, region: eu}\ntokenAudience: mesh\n"
                                       "tokenExpirationSeconds: 7200\n"),
                                 c, error))
      << error;
  EXPECT_EQ(c.image, "img:2");
  EXPECT_EQ(c.admin_port, 16000);
  EXPECT_EQ(c.outbound_port, 16001);
  EXPECT_EQ(c.proxy_uid, 2000);
  EXPECT_EQ(c.intercept_cidrs, (std::vector<std::string>{"10.8.0.0/16", "fd00::/8"}));
  EXPECT_EQ(c.requests, (std::map<std::string, std::string>{{"cpu", "50m"}}));
  EXPECT_EQ(c.node_labels.at("region"), "eu");
  EXPECT_EQ(c.token_expiration_seconds, 7200);
}

TEST_F(InjectorConfigTest, MistakesAreNamed) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"controlPlane: cp:1\ninterceptPorts: [80]\n", "image and controlPlane are required"},
      {"image: i\ncontrolPlane: cp:1\n", "interceptPorts or interceptCidrs"},
      {"image: i\ncontrolPlane: cp:1\ninterceptPorts: [0]\n", "interceptPorts: 0 is not a port"},
      {"image: i\ncontrolPlane: cp:1\ninterceptCidrs: [10.0.0.0/33]\n", "\"10.0.0.0/33\" is not a CIDR"},
      {"image: i\ncontrolPlane: cp:1\ninterceptPorts: [80]\nproxyUid: 0\n", "non-root"},
      {"image: i\ncontrolPlane: cp:1\ninterceptPorts: [80]\ntokenExpirationSeconds: 60\n", "at least 600"},
      {"image: i\ncontrolPlane: cp:1\ninterceptPorts: [80]\nimagee: x\n", "unknown field \"imagee\""},
      {"image: i\ncontrolPlane: cp:1\ninterceptPorts: [80]\nresources: {maximum: {}}\n", "resources.maximum"},
      {"- a list\n", "expected a mapping"},
  };
  for (const auto& [text, message] : cases) {
    InjectorConfig c;
    std::string error;
    const std::string path = write(text);
    EXPECT_FALSE(loadInjectorConfig(path, c, error)) << text;
    EXPECT_NE(error.find(message), std::string::npos) << text << " -> " << error;
    EXPECT_EQ(error.rfind(path, 0), 0u) << error;
  }
  InjectorConfig c;
  std::string error;
  EXPECT_FALSE(loadInjectorConfig("/nonexistent/inject.yaml", c, error));
  EXPECT_NE(error.find("/nonexistent/inject.yaml"), std::string::npos);
}

}  // namespace
}  // namespace infermesh::controlplane
