#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/config/snapshot.h"

namespace infermesh::router {

// What capability ("modelless") selection may use, besides the route.
struct AutoRequest {
  std::string_view capability;        // from the header, else the route's default
  std::uint64_t prompt_tokens = 0;    // estimate; models with a smaller context window are skipped
  // Hard region filters (residency): a model needs an endpoint passing both.
  const std::vector<std::string>* allowed_regions = nullptr;
  const std::vector<std::string_view>* request_regions = nullptr;
  // Observed time to first token in seconds (0: not measured yet).
  std::function<double(const config::ModelConfig&)> observed_ttft;
  // Whether the model has an endpoint that is not ejected, resting or
  // failing health checks right now.
  std::function<bool(const config::ModelConfig&)> available;
};

// Picks the model for an "auto" request by the route's objective among the
// capable models that policy allows (candidates, capability, context
// window, residency). Available models win over unavailable ones; nullptr
// when no model qualifies at all.
const config::ModelConfig* selectModel(const config::Snapshot& snapshot, const config::RouteConfig& route,
                                       const AutoRequest& request);

// A weighted choice among route.split; `draw` is uniform in [0, split_total).
const config::ModelConfig* pickSplit(const config::RouteConfig& route, std::uint32_t draw);

// Whether one of the model's endpoints lies in the allowed regions.
bool servesRegions(const config::ModelConfig& model, const std::vector<std::string>* allowed,
                   const std::vector<std::string_view>* requested);

// Splits an `x-infermesh-regions` header ("eu-west-1, eu-central-1").
std::vector<std::string_view> parseRegionList(std::string_view header);

}  // namespace infermesh::router
