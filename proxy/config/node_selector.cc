#include "proxy/config/node_selector.h"

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

}  // namespace

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
  return out;
}

}  // namespace infermesh::config
