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
  return out;
}

}  // namespace infermesh::config
