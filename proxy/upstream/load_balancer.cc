#include "proxy/upstream/load_balancer.h"

#include <algorithm>

namespace infermesh::upstream {

int pickEndpoint(const config::ModelConfig& model, EndpointStates& states, std::uint32_t& rr_counter,
                 std::mt19937_64& rng, const std::vector<bool>& tried, Clock::time_point now) {
  const std::size_t n = model.endpoints.size();
  if (n == 1) return tried[0] ? -1 : 0;  // nothing to choose
  // Eligible: not tried on this request and not ejected. If ejection leaves
  // nothing, any untried endpoint is: better a doubtful endpoint than a
  // certain 503. Scans instead of a list: no allocation per request.
  bool skip_ejected = true;
  auto eligible = [&](std::size_t i) {
    return !tried[i] && (!skip_ejected || states.get(model.endpoints[i].key).ejected_until <= now);
  };
  std::size_t count = 0;
  for (std::size_t i = 0; i < n; ++i) count += eligible(i);
  if (count == 0) {
    skip_ejected = false;
    for (std::size_t i = 0; i < n; ++i) count += eligible(i);
  }
  if (count == 0) return -1;
  // The eligible endpoint of the given rank (0-based) in endpoint order.
  auto nth = [&](std::size_t rank) {
    for (std::size_t i = 0; i < n; ++i)
      if (eligible(i) && rank-- == 0) return i;
    return n;  // not reached: rank < count
  };
  if (count == 1) return static_cast<int>(nth(0));

  if (model.lb_policy == config::LbPolicy::RoundRobin) {
    // Weighted: the counter walks the weight line; the first eligible
    // endpoint at or after that point takes the request.
    std::uint32_t point = rr_counter++ % std::max<std::uint32_t>(1, model.total_weight);
    std::size_t start = 0;
    for (; start < n; ++start) {
      if (point < model.endpoints[start].weight) break;
      point -= model.endpoints[start].weight;
    }
    for (std::size_t k = 0; k < n; ++k)
      if (eligible((start + k) % n)) return static_cast<int>((start + k) % n);
    return static_cast<int>(nth(0));
  }

  // Least request, power of two choices: two distinct random candidates,
  // the one with fewer requests in flight per unit of weight wins.
  std::uniform_int_distribution<std::size_t> first(0, count - 1), second(0, count - 2);
  const std::size_t ra = first(rng);
  std::size_t rb = second(rng);
  if (rb >= ra) ++rb;
  const std::size_t a = nth(ra), b = nth(rb);
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
