#include "filters/router/route_matcher.h"

#include <algorithm>

namespace infermesh::router {
namespace {

bool matches(const config::RouteConfig& r, std::uint32_t listener, const filter::RequestHead& req,
             const config::ModelConfig* model) {
  if (!r.listeners.empty() && std::find(r.listeners.begin(), r.listeners.end(), listener) == r.listeners.end())
    return false;
  const std::string_view path = req.path();
  if (!r.path_exact.empty() && path != r.path_exact) return false;
  if (!r.path_prefix.empty() && !path.starts_with(r.path_prefix)) return false;
  for (const auto& h : r.headers) {
    auto v = req.headers.get(h.name);
    if (!v || (!h.value.empty() && *v != h.value)) return false;
  }
  if (!r.models.empty()) {
    if (model == nullptr || std::find(r.models.begin(), r.models.end(), model->index) == r.models.end()) return false;
  }
  return true;
}

}  // namespace

const config::RouteConfig* matchRoute(const config::Snapshot& snapshot, std::uint32_t listener_index,
                                      const filter::RequestHead& request, std::string_view model) {
  // The body's model is resolved once (names and aliases); then only the
  // routes that could take it are tried: those naming it, merged in match
  // order with those that accept any model.
  const config::ModelConfig* m = model.empty() ? nullptr : snapshot.findModel(model);
  static const std::vector<std::uint32_t> kNone;
  const auto& naming = m ? snapshot.routes_naming_model[m->index] : kNone;
  const auto& any = snapshot.routes_any_model;
  std::size_t a = 0, b = 0;
  while (a < naming.size() || b < any.size()) {
    const std::uint32_t i = b == any.size() || (a < naming.size() && naming[a] < any[b]) ? naming[a++] : any[b++];
    const auto& r = snapshot.routes[i];
    if (matches(r, listener_index, request, m)) return &r;
  }
  return nullptr;
}

}  // namespace infermesh::router
