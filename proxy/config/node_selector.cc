#include "proxy/config/node_selector.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace infermesh::config {
namespace {

template <typename Map>
bool selects(const Map& selector, const Labels& labels) {
  for (const auto& [k, v] : selector) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) return false;
  }
  return true;
}

bool namesANode(const v1::Model& m) {
  for (const auto& e : m.endpoints())
    if (!e.node().empty()) return true;
  return false;
}

// A sidecar's view of a model whose endpoints name nodes: one endpoint per
// node, that node's proxy, spoken to as the Mesh says and asked for the
// model by its own name. What only the hop next to the engine can do (its
// health checks, load reports, credential) stays with the node proxy.
void throughNodeProxies(v1::Model& m, const v1::Mesh& mesh, const std::string& name) {
  std::vector<v1::Endpoint> out;
  for (const auto& e : m.endpoints()) {
    const v1::MeshNode* node = nullptr;
    for (const auto& n : mesh.nodes())
      if (n.name() == e.node()) node = &n;
    if (node == nullptr) continue;  // validation names it
    v1::Endpoint* into = nullptr;
    for (auto& o : out)
      if (o.address() == node->address()) into = &o;
    if (into == nullptr) {
      into = &out.emplace_back();
      into->set_address(node->address());
      into->set_region(node->region().empty() ? e.region() : node->region());
      into->set_zone(node->zone().empty() ? e.zone() : node->zone());
      into->set_priority(e.priority());
    }
    into->set_weight(into->weight() + (e.weight() ? e.weight() : 1));
    into->set_capacity(into->capacity() + e.capacity());
    into->set_priority(std::min(into->priority(), e.priority()));
  }
  m.clear_endpoints();
  for (auto& e : out) *m.add_endpoints() = std::move(e);
  m.set_upstream_model(name);
  if (mesh.has_upstream_tls()) *m.mutable_upstream_tls() = mesh.upstream_tls();
  else m.clear_upstream_tls();
  m.set_upstream_protocol(!mesh.upstream_protocol().empty() ? mesh.upstream_protocol()
                          : mesh.has_upstream_tls()        ? "auto"
                                                           : "http2");
  m.clear_health_check();
  m.clear_load_report();
  m.clear_upstream_credential();
  m.clear_upstream_headers();
}

}  // namespace

void applyMesh(Resources& out, const Labels& labels) {
  if (out.meshes.empty()) return;
  const v1::Mesh mesh = out.meshes.front().spec;  // a copy: cleared below
  const bool node_proxy = !mesh.node_proxy_selector().empty() && selects(mesh.node_proxy_selector(), labels);
  std::string node;
  if (node_proxy) {
    auto it = labels.find(mesh.node_label().empty() ? "kubernetes.io/hostname" : mesh.node_label());
    if (it != labels.end()) node = it->second;
  }
  for (auto& m : out.models) {
    if (!namesANode(m.spec)) continue;
    bool local = false;
    for (const auto& e : m.spec.endpoints()) local = local || (!node.empty() && e.node() == node);
    if (!local) {
      throughNodeProxies(m.spec, mesh, m.name);
      continue;
    }
    // The engines on this node, called directly.
    std::vector<v1::Endpoint> mine;
    for (const auto& e : m.spec.endpoints())
      if (e.node() == node) {
        mine.push_back(e);
        mine.back().clear_node();  // called directly from here
      }
    m.spec.clear_endpoints();
    for (auto& e : mine) *m.spec.add_endpoints() = std::move(e);
  }
  bool has_listener = false;
  for (const auto& l : out.listeners) has_listener = has_listener || l.name == mesh.listener();
  if (node_proxy && has_listener) {
    // The sidecar already chose the model (split, fallback, capability);
    // a route that names no listener does not choose again on the mesh
    // listener. One that names it explicitly still applies.
    std::vector<Resource<v1::Route>> kept;
    for (auto& r : out.routes) {
      if (r.spec.match().listeners().empty()) {
        for (const auto& l : out.listeners)
          if (l.name != mesh.listener()) r.spec.mutable_match()->add_listeners(l.name);
        if (r.spec.match().listeners().empty()) continue;
      }
      kept.push_back(std::move(r));
    }
    out.routes = std::move(kept);
    // Tried last: the model named in the request body, on the inbound listener.
    Resource<v1::Route> inbound;
    inbound.name = "mesh-inbound";
    inbound.file = out.meshes.front().file;
    inbound.line = out.meshes.front().line;
    inbound.spec.mutable_match()->add_listeners(mesh.listener());
    inbound.spec.set_order(std::numeric_limits<std::int32_t>::min());
    out.routes.push_back(std::move(inbound));
  }
  // The view is derived: what is left names no node and needs no Mesh.
  out.meshes.clear();
}

bool parseLabels(const std::string& text, Labels& out) {
  std::size_t start = 0;
  while (start < text.size()) {
    auto comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) return false;
    out[item.substr(0, eq)] = item.substr(eq + 1);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return true;
}

Resources selectForNode(const Resources& all, const Labels& labels) {
  Resources out;
  out.models = all.models;
  for (const auto& l : all.listeners)
    if (selects(l.spec.node_selector(), labels)) out.listeners.push_back(l);
  for (const auto& r : all.routes) {
    if (!selects(r.spec.node_selector(), labels)) continue;
    // A route bound to listeners this node does not get is not for it.
    const auto& wanted = r.spec.match().listeners();
    if (!wanted.empty()) {
      bool any = false;
      for (const auto& l : out.listeners)
        for (const auto& w : wanted) any = any || l.name == w;
      if (!any) continue;
      auto copy = r;
      copy.spec.mutable_match()->clear_listeners();
      for (const auto& w : wanted)
        for (const auto& l : out.listeners)
          if (l.name == w) copy.spec.mutable_match()->add_listeners(w);
      out.routes.push_back(std::move(copy));
      continue;
    }
    out.routes.push_back(r);
  }
  out.tenants = all.tenants;
  // A policy follows the listeners and routes it protects: attachments and
  // rule conditions naming ones this node does not get are dropped, and a
  // rule that only applied to those routes goes with them (dropping just
  // the condition would widen the rule).
  auto hasListener = [&](const std::string& n) {
    for (const auto& l : out.listeners)
      if (l.name == n) return true;
    return false;
  };
  auto hasRoute = [&](const std::string& n) {
    for (const auto& r : out.routes)
      if (r.name == n) return true;
    return false;
  };
  for (const auto& p : all.policies) {
    auto copy = p;
    auto& spec = copy.spec;
    spec.clear_listeners();
    spec.clear_routes();
    for (const auto& l : p.spec.listeners())
      if (hasListener(l)) spec.add_listeners(l);
    for (const auto& r : p.spec.routes())
      if (hasRoute(r)) spec.add_routes(r);
    if (spec.listeners().empty() && spec.routes().empty()) continue;
    spec.clear_rules();
    for (const auto& rule : p.spec.rules()) {
      if (rule.routes().empty()) {
        *spec.add_rules() = rule;
        continue;
      }
      v1::PolicyRule kept = rule;
      kept.clear_routes();
      for (const auto& r : rule.routes())
        if (hasRoute(r)) kept.add_routes(r);
      if (!kept.routes().empty()) *spec.add_rules() = std::move(kept);
    }
    out.policies.push_back(std::move(copy));
  }
  out.meshes = all.meshes;
  applyMesh(out, labels);
  return out;
}

}  // namespace infermesh::config
