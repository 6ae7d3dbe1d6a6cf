#include "proxy/upstream/load_balancer.h"

#include <algorithm>

namespace infermesh::upstream {

int pickEndpoint(const config::ModelConfig& model, EndpointStates& states, std::uint32_t& rr_counter,
                 std::mt19937_64& rng, const std::vector<bool>& tried, Clock::time_point now) {
  const std::size_t n = model.endpoints.size();
  if (n == 1) return tried[0] ? -1 : 0;  // nothing to choose
  // Eligible: not tried on this request and not ejected. If ejection leaves
  // nothing, fall back to any untried endpoint: better a doubtful endpoint
  // than a certain 503.
  std::vector<std::size_t> eligible;
  eligible.reserve(n);
  for (std::size_t i = 0; i < n; ++i)
    if (!tried[i] && states.get(model.endpoints[i].key).ejected_until <= now) eligible.push_back(i);
  if (eligible.empty())
    for (std::size_t i = 0; i < n; ++i)
      if (!tried[i]) eligible.push_back(i);
  if (eligible.empty()) return -1;
  if (eligible.size() == 1) return static_cast<int>(eligible[0]);

  if (model.lb_policy == config::LbPolicy::RoundRobin) {
    // Weighted: the counter walks the weight line; the first eligible
    // endpoint at or after that point takes the request.
    std::uint32_t point = rr_counter++ % std::max<std::uint32_t>(1, model.total_weight);
    std::size_t start = 0;
    for (; start < n; ++start) {
      if (point < model.endpoints[start].weight) break;
      point -= model.endpoints[start].weight;
    }
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = (start + k) % n;
      if (std::find(eligible.begin(), eligible.end(), i) != eligible.end()) return static_cast<int>(i);
    }
    return static_cast<int>(eligible[0]);
  }

  // Least request, power of two choices: two distinct random candidates,
  // the one with fewer requests in flight per unit of weight wins.
  std::uniform_int_distribution<std::size_t> dist(0, eligible.size() - 1);
  const std::size_t a = eligible[dist(rng)];
  std::size_t b = eligible[dist(rng)];
  if (b == a) b = eligible[(std::find(eligible.begin(), eligible.end(), a) - eligible.begin() + 1) % eligible.size()];
  const auto load = [&](std::size_t i) {
    return static_cast<double>(states.get(model.endpoints[i].key).outstanding) / model.endpoints[i].weight;
  };
  return static_cast<int>(load(b) < load(a) ? b : a);
}

bool recordOutcome(const config::ModelConfig& model, EndpointStates& states, std::size_t endpoint, bool success,
                   Clock::time_point now) {
  EndpointHealth& h = states.get(model.endpoints[endpoint].key);
  if (success) {
    h.consecutive_failures = 0;
    return false;
  }
  ++h.consecutive_failures;
  const auto& od = model.outlier;
  if (od.consecutive_failures == 0 || h.consecutive_failures < od.consecutive_failures || h.ejected_until > now)
    return false;
  // Never eject more than the allowed share of the model's endpoints.
  std::size_t ejected = 0;
  for (const auto& ep : model.endpoints)
    if (states.get(ep.key).ejected_until > now) ++ejected;
  if ((ejected + 1) * 100 > od.max_ejection_percent * model.endpoints.size()) return false;
  const auto backoff = std::min<std::chrono::milliseconds>(od.base_ejection * (1u << std::min(h.ejections, 10u)),
                                                           std::chrono::minutes(5));
  h.ejected_until = now + backoff;
  ++h.ejections;
  h.consecutive_failures = 0;
  return true;
}

}  // namespace infermesh::upstream
