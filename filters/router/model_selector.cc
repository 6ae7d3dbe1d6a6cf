#include "filters/router/model_selector.h"

#include <algorithm>
#include <limits>

namespace infermesh::router {

bool servesRegions(const config::ModelConfig& model, const std::vector<std::string>* allowed,
                   const std::vector<std::string_view>* requested) {
  auto in = [](const auto* list, const std::string& region) {
    return list == nullptr || list->empty() || std::find(list->begin(), list->end(), region) != list->end();
  };
  for (const auto& ep : model.endpoints)
    if (in(allowed, ep.region) && in(requested, ep.region)) return true;
  return false;
}

std::vector<std::string_view> parseRegionList(std::string_view header) {
  std::vector<std::string_view> out;
  while (!header.empty()) {
    auto comma = header.find(',');
    std::string_view item = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

const config::ModelConfig* selectModel(const config::Snapshot& snapshot, const config::RouteConfig& route,
                                       const AutoRequest& request) {
  const auto& sel = route.auto_select;
  // A route that accepts only some models (match.models) selects among them.
  auto accepted = [&](const config::ModelConfig& m) {
    return route.models.empty() || std::find(route.models.begin(), route.models.end(), m.index) != route.models.end();
  };
  auto qualifies = [&](const config::ModelConfig& m) {
    return accepted(m) && m.hasCapability(request.capability) &&
           (m.context_window == 0 || request.prompt_tokens <= m.context_window) &&
           servesRegions(m, request.allowed_regions, request.request_regions);
  };
  // Lower is better; candidates order breaks ties (and is the preference).
  auto cost = [&](const config::ModelConfig& m, std::size_t rank) -> double {
    switch (sel.objective) {
      case config::Objective::Cheapest: return m.price_in_per_1k + m.price_out_per_1k;
      case config::Objective::Fastest: return request.observed_ttft ? request.observed_ttft(m) : 0;
      case config::Objective::Preference: return static_cast<double>(rank);
    }
    return 0;
  };
  const config::ModelConfig* best = nullptr;
  const config::ModelConfig* best_unavailable = nullptr;
  double best_cost = std::numeric_limits<double>::infinity();
  double best_unavailable_cost = best_cost;
  auto consider = [&](const config::ModelConfig& m, std::size_t rank) {
    if (!qualifies(m)) return;
    const double c = cost(m, rank);
    if (!request.available || request.available(m)) {
      if (c < best_cost) best = &m, best_cost = c;
    } else if (c < best_unavailable_cost) {
      best_unavailable = &m, best_unavailable_cost = c;
    }
  };
  if (!sel.candidates.empty())
    for (std::size_t i = 0; i < sel.candidates.size(); ++i) consider(*sel.candidates[i], i);
  else {
    const auto& capable = snapshot.modelsWith(request.capability);
    for (std::size_t i = 0; i < capable.size(); ++i) consider(*capable[i], i);
  }
  return best ? best : best_unavailable;
}

const config::ModelConfig* pickSplit(const config::RouteConfig& route, std::uint32_t draw) {
  for (const auto& w : route.split) {
    if (draw < w.weight) return w.model;
    draw -= w.weight;
  }
  return route.split.empty() ? nullptr : route.split.back().model;
}

}  // namespace infermesh::router
