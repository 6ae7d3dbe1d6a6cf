#include "proxy/config/node_selector.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "proxy/config/compiler.h"
#include "proxy/config/yaml_loader.h"

namespace infermesh::config {
namespace {

// Two nodes, a canary split over two versions of one model, sidecars on
// one listener and node proxies on another.
constexpr const char* kMesh = R"(apiVersion: infermesh.io/v1
kind: Mesh
metadata: {name: mesh}
spec:
  nodeProxySelector: {role: node}
  nodeLabel: node
  listener: inbound
  nodes:
    - {name: gpu-1, address: 10.0.0.1:18443, region: eu, zone: a}
    - {name: gpu-2, address: 10.0.0.2:18443}
  upstreamTls: {caFile: /etc/mesh/ca.crt, certFile: /etc/mesh/app.crt, keyFile: /etc/mesh/app.key}
---
apiVersion: infermesh.io/v1
kind: Listener
metadata: {name: outbound}
spec: {address: 127.0.0.1:0, filters: [{name: router}], nodeSelector: {role: sidecar}}
---
apiVersion: infermesh.io/v1
kind: Listener
metadata: {name: inbound}
spec: {address: 127.0.0.1:0, filters: [{name: router}], nodeSelector: {role: node}}
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: chat-v1}
spec:
  aliases: [chat]
  upstreamModel: meta-llama/Llama-3-8B
  healthCheck: {path: /health}
  endpoints:
    - {address: 10.1.0.5:8000, node: gpu-1, zone: a}
    - {address: 10.1.0.6:8000, node: gpu-1, zone: a}
    - {address: 10.2.0.5:8000, node: gpu-2, region: us, zone: b}
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: chat-v2}
spec:
  endpoints: [{address: 10.2.0.9:8000, node: gpu-2}]
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: hosted}
spec:
  endpoints: [{address: 127.0.0.1:9443}]
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: chat}
spec:
  match: {listeners: [outbound], models: [chat]}
  split: [{model: chat-v1, weight: 90}, {model: chat-v2, weight: 10}]
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: everywhere}
spec:
  match: {pathPrefix: /v1/}
  fallbacks: [{model: hosted, on: ["429"]}]
)";

Resources load(const std::string& text) {
  YamlLoader loader;
  loader.loadText(text, "mesh.yaml");
  EXPECT_TRUE(loader.errors().empty()) << joinErrors(loader.errors());
  return loader.resources();
}

const Resource<v1::Model>& model(const Resources& r, const std::string& name) {
  for (const auto& m : r.models)
    if (m.name == name) return m;
  ADD_FAILURE() << "no model " << name;
  return r.models.front();
}

TEST(MeshView, TheWholeConfigValidates) {
  const auto all = load(kMesh);
  auto r = compile(all, 1);
  EXPECT_TRUE(r.snapshot) << joinErrors(r.errors);
}

TEST(MeshView, ASidecarReachesEachNodeThroughItsProxy) {
  const auto view = selectForNode(load(kMesh), {{"role", "sidecar"}});
  const auto& v1 = model(view, "chat-v1").spec;
  ASSERT_EQ(v1.endpoints_size(), 2);
  EXPECT_EQ(v1.endpoints(0).address(), "10.0.0.1:18443");
  EXPECT_EQ(v1.endpoints(0).weight(), 2u);  // two engines behind it
  EXPECT_EQ(v1.endpoints(0).region(), "eu");  // the Mesh's node locality wins
  EXPECT_EQ(v1.endpoints(1).address(), "10.0.0.2:18443");
  EXPECT_EQ(v1.endpoints(1).region(), "us");  // else the endpoints'
  EXPECT_TRUE(v1.endpoints(1).node().empty());
  // Asked for by its mesh name, over the mesh's mTLS; the engine's name,
  // its health checks and credential stay with the node proxy.
  EXPECT_EQ(v1.upstream_model(), "chat-v1");
  EXPECT_EQ(v1.upstream_tls().cert_file(), "/etc/mesh/app.crt");
  EXPECT_EQ(v1.upstream_protocol(), "auto");
  EXPECT_FALSE(v1.has_health_check());
  EXPECT_EQ(model(view, "chat-v2").spec.endpoints(0).address(), "10.0.0.2:18443");
  // A model without nodes is left as written.
  EXPECT_EQ(model(view, "hosted").spec.endpoints(0).address(), "127.0.0.1:9443");
  // The sidecar's own routes only.
  ASSERT_EQ(view.routes.size(), 2u);
  EXPECT_EQ(view.routes[0].name, "chat");
  EXPECT_EQ(view.routes[1].name, "everywhere");
  auto compiled = compile(view, 1);
  EXPECT_TRUE(compiled.snapshot) << joinErrors(compiled.errors);
}

TEST(MeshView, ANodeProxyCallsItsOwnEnginesAndServesAnyModelByName) {
  const auto view = selectForNode(load(kMesh), {{"role", "node"}, {"node", "gpu-1"}});
  const auto& v1 = model(view, "chat-v1").spec;
  ASSERT_EQ(v1.endpoints_size(), 2);
  EXPECT_EQ(v1.endpoints(0).address(), "10.1.0.5:8000");
  EXPECT_EQ(v1.endpoints(1).address(), "10.1.0.6:8000");
  EXPECT_TRUE(v1.endpoints(0).node().empty());
  EXPECT_EQ(v1.upstream_model(), "meta-llama/Llama-3-8B");
  EXPECT_TRUE(v1.has_health_check());
  // chat-v2 runs on gpu-2 only: forwarded to that node's proxy.
  EXPECT_EQ(model(view, "chat-v2").spec.endpoints(0).address(), "10.0.0.2:18443");
  // A route naming no listener does not decide again on the mesh listener
  // (the node proxy has no other): only the derived one is left.
  ASSERT_EQ(view.routes.size(), 1u);
  EXPECT_EQ(view.routes[0].name, "mesh-inbound");
  EXPECT_EQ(view.routes[0].spec.match().listeners(0), "inbound");
  EXPECT_TRUE(view.routes[0].spec.model().empty());  // the body names it
  auto compiled = compile(view, 1);
  EXPECT_TRUE(compiled.snapshot) << joinErrors(compiled.errors);
}

std::string edited(const std::string& from, const std::string& to) {
  std::string text = kMesh;
  text.replace(text.find(from), from.size(), to);
  return text;
}

TEST(MeshView, MistakesAreNamed) {
  auto errors = [](const std::string& text) { return joinErrors(compile(load(text), 1).errors); };
  const std::string unknown = edited("node: gpu-2}]", "node: gpu-9}]");
  EXPECT_NE(errors(unknown).find("node \"gpu-9\" is not in Mesh/mesh nodes"), std::string::npos) << errors(unknown);
  const std::string mixed = edited("{address: 10.2.0.5:8000, node: gpu-2,", "{address: 10.2.0.5:8000,");
  EXPECT_NE(errors(mixed).find("either every endpoint names its node or none does"), std::string::npos)
      << errors(mixed);
  const std::string same = edited("10.0.0.2:18443", "10.0.0.1:18443");
  EXPECT_NE(errors(same).find("is also node \"gpu-1\"'s"), std::string::npos) << errors(same);
  const std::string no_mesh =
      "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: l}\nspec: {address: 127.0.0.1:0, filters: "
      "[{name: router}]}\n---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: m}\n"
      "spec: {endpoints: [{address: 10.0.0.1:8000, node: gpu-1}]}\n";
  EXPECT_NE(errors(no_mesh).find("names node \"gpu-1\" but there is no Mesh"), std::string::npos) << errors(no_mesh);
}

// A proxy reading files applies the Mesh with its --node-labels too.
TEST(MeshView, AProxyReadingFilesDerivesItsOwnView) {
  const std::string path = ::testing::TempDir() + "mesh-" + std::to_string(::getpid()) + ".yaml";
  { std::ofstream(path) << kMesh; }
  auto sidecar = loadAndCompile(path, 1, {{"role", "sidecar"}});
  auto node = loadAndCompile(path, 1, {{"role", "node"}, {"node", "gpu-1"}});
  std::filesystem::remove(path);
  ASSERT_TRUE(sidecar.snapshot) << joinErrors(sidecar.errors);
  ASSERT_TRUE(node.snapshot) << joinErrors(node.errors);
  EXPECT_EQ(sidecar.snapshot->findModel("chat-v1")->endpoints.at(0).address, "10.0.0.1:18443");
  EXPECT_EQ(node.snapshot->findModel("chat-v1")->endpoints.at(0).address, "10.1.0.5:8000");
  EXPECT_EQ(node.snapshot->findModel("chat-v1")->upstream_model, "meta-llama/Llama-3-8B");
}

}  // namespace
}  // namespace infermesh::config
