// A DiscoveryResponse from the control plane, decoded and applied as the
// proxy's ADS client does (proxy/xds_client/ads_client.cc), without the
// gRPC stream: the response replaces its type's resources in a baseline
// config (deploy/local), the whole is turned into resources and compiled
// (the reload path), and the subscription answers with an ACK or a NACK.
//
// Seeds: INFERMESH_FUZZ_WRITE_SEEDS=<dir> writes one response per type,
// built from deploy/local the way the control plane builds them, and exits.

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

#include "fuzz_check.h"
#include "router_stand_in.h"
#include "infermesh/discovery/v1/discovery.pb.h"
#include "proxy/config/compiler.h"
#include "proxy/config/node_selector.h"
#include "proxy/config/yaml_loader.h"
#include "proxy/xds_client/ads_client.h"
#include "xds/resource_types.h"
#include "xds/snapshot.h"
#include "xds/subscription.h"

#ifndef INFERMESH_SOURCE_DIR
#error "INFERMESH_SOURCE_DIR must name the checkout (for deploy/local)"
#endif

namespace dv1 = infermesh::discovery::v1;
using namespace infermesh;

namespace {

// deploy/local as the control plane would serve it to the demo's sidecar
// (deploy/local is a Mesh: each proxy gets its own view): one response per
// type.
std::map<std::string, dv1::DiscoveryResponse> baseline() {
  infermesh::fuzz::registerRouterStandIn();
  config::YamlLoader loader;
  loader.loadPath(std::string(INFERMESH_SOURCE_DIR) + "/deploy/local");
  FUZZ_CHECK(loader.errors().empty());
  const config::Resources view = config::selectForNode(loader.resources(), {{"role", "sidecar"}});
  xds::SnapshotBuilder builder;
  for (const auto& r : view.models) builder.add(r.name, r.spec);
  for (const auto& r : view.listeners) builder.add(r.name, r.spec);
  for (const auto& r : view.routes) builder.add(r.name, r.spec);
  for (const auto& r : view.tenants) builder.add(r.name, r.spec);
  for (const auto& r : view.policies) builder.add(r.name, r.spec);
  const auto snapshot = builder.build();
  std::map<std::string, dv1::DiscoveryResponse> out;
  for (const auto& type : xds::pushOrder()) {
    const auto* typed = snapshot->get(type);
    FUZZ_CHECK(typed != nullptr);
    auto& resp = out[type];
    resp.set_type_url(type);
    resp.set_version_info(typed->version);
    resp.set_nonce("1");
    for (const auto& [name, res] : typed->by_name) *resp.add_resources() = res;
  }
  // The baseline itself must apply, or every input would only reach errors.
  FUZZ_CHECK(config::compile(xds_client::toResources(out), 1).errors.empty());
  return out;
}

const std::map<std::string, dv1::DiscoveryResponse>& base() {
  static const auto b = baseline();
  return b;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("INFERMESH_FUZZ_WRITE_SEEDS")) {
    int i = 0;
    for (const auto& [type, resp] : base()) {
      std::ofstream out(std::string(dir) + "/seed-" + std::to_string(i++), std::ios::binary);
      FUZZ_CHECK(resp.SerializeToOstream(&out));
    }
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  dv1::DiscoveryResponse response;
  if (!response.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (!xds::knownType(response.type_url())) return 0;  // ignored, as the client does
  auto candidate = base();
  candidate[response.type_url()] = response;
  const config::Resources resources = xds_client::toResources(candidate);
  const config::CompileResult compiled = config::compile(resources, 2);
  FUZZ_CHECK((compiled.snapshot == nullptr) != compiled.errors.empty());
  std::string error;
  if (!compiled.errors.empty()) {
    (void)config::onlyDanglingReferences(compiled.errors);
    error = config::joinErrors(compiled.errors);
    FUZZ_CHECK(!error.empty());
  }
  dv1::Node node;
  node.set_id("fuzz");
  xds::Subscription sub(response.type_url(), node);
  const dv1::DiscoveryRequest answer = sub.onResponse(response, [&](const dv1::DiscoveryResponse&) { return error; });
  FUZZ_CHECK(answer.response_nonce() == response.nonce());
  FUZZ_CHECK(answer.has_error_detail() == !error.empty());
  return 0;
}
