#include "proxy/config/yaml_loader.h"

#include <gtest/gtest.h>

#include "proxy/config/compiler.h"

namespace infermesh::config {
namespace {

constexpr const char* kListener = R"(apiVersion: infermesh.io/v1
kind: Listener
metadata:
  name: main
spec:
  address: 127.0.0.1:0
  filters:
    - name: router
)";

constexpr const char* kModel = R"(---
apiVersion: infermesh.io/v1
kind: Model
metadata:
  name: chat-small
spec:
  aliases: [small]
  endpoints:
    - address: 127.0.0.1:9001
    - address: localhost:9002
  connectTimeout: 250ms
)";

class LoaderTest : public ::testing::Test {
 protected:


  CompileResult load(const std::string& text) {
    YamlLoader loader;
    loader.loadText(text, "test.yaml");
    if (!loader.errors().empty()) return CompileResult{nullptr, loader.errors()};
    return compile(loader.resources(), 7);
  }

  // The single error expected, or a failure listing them all.
  ConfigError onlyError(const std::string& text) {
    auto r = load(text);
    EXPECT_EQ(r.errors.size(), 1u) << joinErrors(r.errors);
    return r.errors.empty() ? ConfigError{} : r.errors.front();
  }
};

TEST_F(LoaderTest, CompilesAValidConfig) {
  auto r = load(std::string(kListener) + kModel +
                "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: r}\n"
                "spec:\n  match: {pathPrefix: /v1/}\n  timeouts: {request: 2m, idle: 30s}\n");
  ASSERT_TRUE(r.snapshot) << joinErrors(r.errors);
  const Snapshot& s = *r.snapshot;
  EXPECT_EQ(s.version, 7u);
  ASSERT_EQ(s.models.size(), 1u);
  EXPECT_EQ(s.models[0].connect_timeout.count(), 250);
  ASSERT_EQ(s.models[0].endpoints.size(), 2u);
  EXPECT_EQ(s.models[0].endpoints[1].ip, "127.0.0.1");  // localhost resolved at compile time
  EXPECT_EQ(s.findModel("small"), &s.models[0]);
  ASSERT_EQ(s.routes.size(), 1u);
  EXPECT_EQ(s.routes[0].request_timeout.count(), 120000);
  EXPECT_EQ(s.routes[0].idle_timeout.count(), 30000);
  EXPECT_NE(s.dump_json.find("\"chat-small\""), std::string::npos);
}

TEST_F(LoaderTest, EachResourceKnowsTheLineItsDocumentStartsOn) {
  YamlLoader loader;
  loader.loadText(std::string(kListener) + kModel, "test.yaml");
  ASSERT_TRUE(loader.errors().empty()) << joinErrors(loader.errors());
  EXPECT_EQ(loader.resources().listeners.at(0).line, 1);
  EXPECT_EQ(loader.resources().models.at(0).line, 10);  // its first key, after the `---`
  // A field the loader has no line for falls back to the document's.
  EXPECT_EQ(loader.resources().models.at(0).lineOf("spec.nothing.here"), 10);
  EXPECT_EQ(loader.resources().models.at(0).lineOf("no-such-root"), 10);
  auto r = compile(loader.resources(), 1);
  ASSERT_TRUE(r.snapshot) << joinErrors(r.errors);
  EXPECT_NE(r.snapshot->dump_json.find("{\"name\":\"chat-small\",\"file\":\"test.yaml\",\"line\":10,"),
            std::string::npos)
      << r.snapshot->dump_json;
}

TEST_F(LoaderTest, UnknownFieldNamesFileDocumentFieldAndLine) {
  auto e = onlyError(std::string(kListener) + kModel +
                     "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: r}\nspec:\n  match:\n"
                     "    pathPrefx: /v1/\n");
  EXPECT_EQ(e.file, "test.yaml");
  EXPECT_EQ(e.document, "Route/r");
  EXPECT_EQ(e.field, "spec.match.pathPrefx");
  EXPECT_EQ(e.line, 26);
  EXPECT_NE(e.message.find("unknown field"), std::string::npos);
  EXPECT_NE(e.str().find("test.yaml:26: Route/r: spec.match.pathPrefx: unknown field"), std::string::npos) << e.str();
}

TEST_F(LoaderTest, RouteToUndefinedModelIsAnError) {
  auto e = onlyError(std::string(kListener) +
                     "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: r}\nspec:\n  model: gpt-x\n");
  EXPECT_EQ(e.document, "Route/r");
  EXPECT_EQ(e.field, "spec.model");
  EXPECT_EQ(e.line, 14);
  EXPECT_NE(e.message.find("\"gpt-x\" is not defined"), std::string::npos);
}

TEST_F(LoaderTest, WrongTypesAreReportedWithTheirPath) {
  auto e = onlyError(std::string(kListener) +
                     "  limits:\n    maxRequestBodyBytes: lots\n");
  EXPECT_EQ(e.field, "spec.limits.maxRequestBodyBytes");
  EXPECT_EQ(e.line, 10);
  EXPECT_NE(e.message.find("expected a number"), std::string::npos);

  e = onlyError(std::string(kListener) + "  limits:\n    headerTimeout: soon\n");
  EXPECT_EQ(e.field, "spec.limits.headerTimeout");
  EXPECT_NE(e.message.find("duration"), std::string::npos);

  // A bare number has no unit: refused like any bad duration, never read
  // as seconds.
  for (const char* bare : {"500", "1.5", "0"}) {
    e = onlyError(std::string(kListener) + "  limits:\n    headerTimeout: " + bare + "\n");
    EXPECT_EQ(e.field, "spec.limits.headerTimeout") << bare;
    EXPECT_NE(e.message.find("expected a duration with its unit such as \"250ms\""), std::string::npos) << e.message;
  }

  e = onlyError(std::string(kListener) +
                "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: m}\nspec:\n  aliases: small\n");
  EXPECT_EQ(e.field, "spec.aliases");
  EXPECT_NE(e.message.find("expected a list"), std::string::npos);
}

TEST_F(LoaderTest, DocumentHeaderIsChecked) {
  auto e = onlyError("apiVersion: v2\nkind: Listener\nmetadata: {name: x}\nspec: {}\n");
  EXPECT_EQ(e.field, "apiVersion");
  EXPECT_EQ(e.line, 1);
  e = onlyError("apiVersion: infermesh.io/v1\nkind: Gateway\nmetadata: {name: x}\nspec: {}\n");
  EXPECT_EQ(e.field, "kind");
  EXPECT_NE(e.message.find("unknown kind \"Gateway\""), std::string::npos);
  e = onlyError("apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {}\nspec: {}\n");
  EXPECT_EQ(e.field, "metadata.name");
}

TEST_F(LoaderTest, InvalidYamlReportsTheLine) {
  auto e = onlyError(std::string(kListener) + "  limits: [unclosed\n");
  EXPECT_EQ(e.file, "test.yaml");
  EXPECT_GT(e.line, 8);
  EXPECT_NE(e.message.find("invalid YAML"), std::string::npos);
}

// Found by tests/fuzz/yaml_config_fuzz: yaml-cpp 0.7's LoadAll loops
// forever, allocating, on a document that starts with a stray ','.
TEST_F(LoaderTest, StrayCommaAtADocumentStartIsAnErrorNotAHang) {
  for (const char* text : {",", "a: 1\n---\n,\n", "# comment\n ,,,, x: 1\n"}) {
    YamlLoader loader;
    loader.loadText(text, "test.yaml");
    ASSERT_EQ(loader.errors().size(), 1u) << text;
    EXPECT_NE(loader.errors()[0].message.find("invalid YAML"), std::string::npos) << loader.errors()[0].message;
  }
  // Empty documents between separators are still fine.
  YamlLoader loader;
  loader.loadText(std::string("---\n---\n") + kListener, "test.yaml");
  EXPECT_TRUE(loader.errors().empty());
  EXPECT_EQ(loader.resources().listeners.size(), 1u);
}

TEST_F(LoaderTest, UnclosedFlowCollectionNamesTheLineItOpened) {
  // yaml-cpp notices the missing ']' only at the next line's token.
  auto e = onlyError(
      "apiVersion: infermesh.io/v1\nkind: Model\nmetadata:\n  name: m\n"
      "spec:\n  capabilities: [chat]  # it's [closed]\n  aliases: [a, b\n  endpoints:\n    - address: x\n");
  EXPECT_EQ(e.line, 7) << e.message;
  EXPECT_NE(e.message.find("end of sequence flow not found"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find("'['"), std::string::npos) << e.message;
  // The innermost open collection, past quoted brackets and plain
  // scalars that merely contain one.
  e = onlyError("a: 'x [y'\nb: it's a[1]\nc: [p, {q: \"]}\"\n\nd: 3\n");
  EXPECT_EQ(e.line, 3) << e.message;
  EXPECT_NE(e.message.find("'{'"), std::string::npos) << e.message;
}

TEST_F(LoaderTest, SemanticErrors) {
  auto e = onlyError(
      "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: l}\nspec:\n  address: nowhere\n"
      "  filters: [{name: router}]\n");
  EXPECT_EQ(e.field, "spec.address");
  EXPECT_EQ(e.line, 5);

  e = onlyError(
      "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: l}\nspec:\n  address: 127.0.0.1:0\n"
      "  filters:\n    - name: compress\n    - name: router\n");
  EXPECT_EQ(e.field, "spec.filters[0].name");
  EXPECT_EQ(e.line, 7);
  EXPECT_NE(e.message.find("unknown filter \"compress\" ("), std::string::npos) << e.message;
  // The known ones are listed, sorted.
  EXPECT_NE(e.message.find("authn, authz, direct_response, headers, ratelimit, router, telemetry"), std::string::npos)
      << e.message;

  e = onlyError(std::string(kListener) + kModel +
                "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: other}\n"
                "spec:\n  aliases: [small]\n  endpoints: [{address: '127.0.0.1:1'}]\n");
  EXPECT_EQ(e.document, "Model/other");
  EXPECT_EQ(e.field, "spec.aliases[0]");
  EXPECT_NE(e.message.find("already used by Model/chat-small"), std::string::npos);

  e = onlyError(std::string(kListener) +
                "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: m}\n"
                "spec:\n  endpoints: [{address: '127.0.0.1:99999'}]\n");
  EXPECT_EQ(e.field, "spec.endpoints[0].address");
  EXPECT_NE(e.message.find("invalid port"), std::string::npos);
}

TEST_F(LoaderTest, ListenerTrustAndPathOptions) {
  const std::string head =
      "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: l}\nspec:\n  address: 127.0.0.1:0\n"
      "  filters: [{name: router}]\n";
  auto r = load(head + "  pathNormalization: {mergeSlashes: false, escapedSlashes: decode}\n"
                       "  trustedPeers: {sources: [10.0.0.0/8, '::1']}\n"
                       "  clientHeaders: [X-Infermesh-Capability]\n" + kModel);
  ASSERT_TRUE(r.snapshot) << joinErrors(r.errors);
  const auto& l = r.snapshot->listeners[0];
  EXPECT_FALSE(l.path_normalization.merge_slashes);
  EXPECT_EQ(l.path_normalization.escaped_slashes, common::EscapedSlashes::Decode);
  EXPECT_EQ(l.trusted_sources.size(), 2u);
  EXPECT_EQ(l.client_headers, std::vector<std::string>{"x-infermesh-capability"});

  auto e = onlyError(head + "  pathNormalization: {escapedSlashes: unescape}\n" + kModel);
  EXPECT_EQ(e.field, "spec.pathNormalization.escapedSlashes");
  e = onlyError(head + "  trustedPeers: {sources: [10.0.0.0/33]}\n" + kModel);
  EXPECT_EQ(e.field, "spec.trustedPeers.sources[0]");
  e = onlyError(head + "  clientHeaders: [x-infermesh-shadow]\n" + kModel);
  EXPECT_EQ(e.field, "spec.clientHeaders[0]");
  // SPIFFE IDs need mTLS to be seen, and must be well formed.
  e = onlyError(head + "  trustedPeers: {spiffeIds: ['spiffe://td/ns/mesh/']}\n" + kModel);
  EXPECT_EQ(e.field, "spec.trustedPeers.spiffeIds");
  e = onlyError(std::string(kListener) +
                "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: m}\nspec:\n"
                "  endpoints: [{address: '127.0.0.1:1'}]\n"
                "  upstreamTls: {caFile: /ca.pem, spiffeIds: ['spiffe://td/ns/../admin']}\n");
  EXPECT_EQ(e.field, "spec.upstreamTls.spiffeIds[0]");
  EXPECT_NE(e.message.find(".."), std::string::npos) << e.message;
}

TEST_F(LoaderTest, CapacityAndLoadReportCompile) {
  auto r = load(std::string(kListener) +
                "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: m}\nspec:\n"
                "  loadBalancer: {policy: load_aware}\n"
                "  loadReport: {path: /metrics/orca, interval: 250ms, timeout: 100ms}\n"
                "  endpoints:\n    - {address: '127.0.0.1:1', capacity: 2}\n    - {address: '127.0.0.1:2'}\n");
  ASSERT_TRUE(r.errors.empty()) << joinErrors(r.errors);
  const auto& m = r.snapshot->models[0];
  EXPECT_EQ(m.endpoints[0].capacity, 2u);
  EXPECT_EQ(m.endpoints[1].capacity, 0u);  // learned
  EXPECT_TRUE(m.load_report.enabled());
  EXPECT_EQ(m.load_report.path, "/metrics/orca");
  EXPECT_EQ(m.load_report.interval.count(), 250);
  EXPECT_EQ(m.load_report.timeout.count(), 100);
  // Defaults.
  r = load(std::string(kListener) +
           "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: m}\nspec:\n"
           "  loadReport: {path: /metrics}\n  endpoints: [{address: '127.0.0.1:1'}]\n");
  ASSERT_TRUE(r.errors.empty()) << joinErrors(r.errors);
  EXPECT_EQ(r.snapshot->models[0].load_report.interval.count(), 1000);
  EXPECT_EQ(r.snapshot->models[0].load_report.timeout.count(), 500);
}

TEST_F(LoaderTest, BadCapacityAndLoadReportNameFileLineAndField) {
  const std::string head = std::string(kListener) + "---\napiVersion: infermesh.io/v1\nkind: Model\n"
                                                    "metadata: {name: m}\nspec:\n";
  const int first = 14;  // the line after "spec:"
  auto e = onlyError(head + "  endpoints:\n    - address: 127.0.0.1:1\n      capacity: -2\n");
  EXPECT_EQ(e.file, "test.yaml");
  EXPECT_EQ(e.field, "spec.endpoints[0].capacity");
  EXPECT_EQ(e.line, first + 2);
  e = onlyError(head + "  endpoints:\n    - address: 127.0.0.1:1\n      capacity: two\n");
  EXPECT_EQ(e.field, "spec.endpoints[0].capacity");
  EXPECT_EQ(e.line, first + 2);
  e = onlyError(head + "  endpoints:\n    - address: 127.0.0.1:1\n      capacity: 2000000\n");
  EXPECT_EQ(e.field, "spec.endpoints[0].capacity");
  EXPECT_EQ(e.line, first + 2);
  EXPECT_EQ(e.document, "Model/m");
  e = onlyError(head + "  endpoints: [{address: '127.0.0.1:1'}]\n  loadReport:\n    path: /m\n    interval: 0s\n");
  EXPECT_EQ(e.field, "spec.loadReport.interval");
  EXPECT_EQ(e.line, first + 3);
  EXPECT_NE(e.message.find("must be > 0"), std::string::npos);
  e = onlyError(head + "  endpoints: [{address: '127.0.0.1:1'}]\n  loadReport:\n    interval: 1s\n");
  EXPECT_EQ(e.field, "spec.loadReport.path");
  EXPECT_EQ(e.line, first + 1);
  e = onlyError(head + "  endpoints: [{address: '127.0.0.1:1'}]\n  loadReport: {path: metrics}\n");
  EXPECT_EQ(e.field, "spec.loadReport.path");
  e = onlyError(head + "  endpoints: [{address: '127.0.0.1:1'}]\n  loadReport: {path: /m, interval: soon}\n");
  EXPECT_EQ(e.field, "spec.loadReport.interval");
  EXPECT_EQ(e.line, first + 1);
}

TEST_F(LoaderTest, EveryErrorIsReportedNotOnlyTheFirst) {
  auto r = load(
      "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: l}\nspec:\n  adress: x\n  protcol: y\n");
  EXPECT_EQ(r.errors.size(), 2u) << joinErrors(r.errors);
}

TEST_F(LoaderTest, RoutesAreOrderedByOrderThenSource) {
  auto r = load(std::string(kListener) + kModel +
                "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: a}\nspec: {}\n"
                "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: b}\nspec: {order: 5}\n"
                "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: c}\nspec: {}\n");
  ASSERT_TRUE(r.snapshot) << joinErrors(r.errors);
  ASSERT_EQ(r.snapshot->routes.size(), 3u);
  EXPECT_EQ(r.snapshot->routes[0].name, "b");
  EXPECT_EQ(r.snapshot->routes[1].name, "a");
  EXPECT_EQ(r.snapshot->routes[2].name, "c");
}

TEST_F(LoaderTest, MissingPathIsAnError) {
  YamlLoader loader;
  loader.loadPath("/nonexistent/infermesh");
  ASSERT_EQ(loader.errors().size(), 1u);
  EXPECT_NE(loader.errors()[0].str().find("no such file"), std::string::npos);
}

// The configs shipped in deploy/ stay valid as the schema grows.
TEST_F(LoaderTest, ShippedConfigsCompile) {
  for (const char* dir : {"deploy/local", "deploy/examples/mesh-tls", "deploy/examples/grpc", "deploy/examples/governance",
                          "deploy/examples/ratelimit"}) {
    auto r = loadAndCheck(std::string(INFERMESH_SOURCE_DIR) + "/" + dir, 1);
    EXPECT_TRUE(r.snapshot) << dir << ":\n" << joinErrors(r.errors);
  }
}

// deploy/local is a mesh: each of its proxies gets its own view, and a
// proxy that does not say which one it is is told so.
TEST_F(LoaderTest, TheLocalMeshHasASidecarAndANodeProxyView) {
  const std::string dir = std::string(INFERMESH_SOURCE_DIR) + "/deploy/local";
  auto sidecar = loadAndCompile(dir, 1, {{"role", "sidecar"}});
  ASSERT_TRUE(sidecar.snapshot) << joinErrors(sidecar.errors);
  ASSERT_EQ(sidecar.snapshot->listeners.size(), 1u);
  EXPECT_EQ(sidecar.snapshot->listeners[0].name, "outbound");
  auto node = loadAndCompile(dir, 1, {{"role", "node"}, {"node", "local-node"}});
  ASSERT_TRUE(node.snapshot) << joinErrors(node.errors);
  ASSERT_EQ(node.snapshot->listeners.size(), 1u);
  EXPECT_EQ(node.snapshot->listeners[0].name, "inbound");
  auto unnamed = loadAndCompile(dir, 1, {});
  EXPECT_FALSE(unnamed.snapshot);
  EXPECT_NE(joinErrors(unnamed.errors).find("--node-labels"), std::string::npos) << joinErrors(unnamed.errors);
}

TEST_F(LoaderTest, TheMutualTlsMeshExampleHasBothViews) {
  const std::string dir = std::string(INFERMESH_SOURCE_DIR) + "/deploy/examples/mesh-tls";
  auto sidecar = loadAndCompile(dir, 1, {{"role", "sidecar"}});
  ASSERT_TRUE(sidecar.snapshot) << joinErrors(sidecar.errors);
  auto node = loadAndCompile(dir, 1, {{"role", "node"}, {"kubernetes.io/hostname", "gpu-node-2"}});
  ASSERT_TRUE(node.snapshot) << joinErrors(node.errors);
  EXPECT_EQ(node.snapshot->listeners.size(), 1u);
}

}  // namespace
}  // namespace infermesh::config
