#include "proxy/upstream/load_balancer.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <limits>

namespace infermesh::upstream {
namespace {

constexpr std::uint64_t kNoTier = std::numeric_limits<std::uint64_t>::max();
// A full KV cache costs about as much as this many queued requests: the
// server must preempt or wait before it can start another sequence.
constexpr double kKvCacheWeight = 4.0;
constexpr double kEwmaHalfLifeSeconds = 10.0;

std::uint64_t mix(std::uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

double halvings(Clock::duration age, double half_life_seconds) {
  const double s = std::chrono::duration<double>(age).count();
  return s <= 0 ? 1.0 : std::exp2(-s / half_life_seconds);
}

}  // namespace

bool regionAllowed(const config::EndpointConfig& ep, const PickRequest& req) {
  if (req.allowed_regions && !req.allowed_regions->empty() &&
      std::find(req.allowed_regions->begin(), req.allowed_regions->end(), ep.region) == req.allowed_regions->end())
    return false;
  if (req.request_regions && !req.request_regions->empty() &&
      std::find(req.request_regions->begin(), req.request_regions->end(), ep.region) == req.request_regions->end())
    return false;
  return true;
}

double currentEwma(const EndpointHealth& h, Clock::time_point now) {
  return h.ewma_seconds * halvings(now - h.ewma_at, kEwmaHalfLifeSeconds);
}

void recordLatency(EndpointHealth& h, double seconds, Clock::time_point now) {
  const double current = currentEwma(h, now);
  if (h.ewma_seconds == 0 || seconds > current) {
    // Peak-sensitive: a slower sample counts at once, so a backend that
    // starts queueing loses traffic before its queue is long.
    h.ewma_seconds = seconds;
  } else {
    // Faster samples pull it down gradually, weighted by the time since the
    // last one (a sample after a quiet spell counts for more).
    const double dt = std::chrono::duration<double>(now - h.ewma_at).count();
    const double alpha = std::clamp(1.0 - std::exp(-std::max(dt, 0.0) / 1.0), 0.1, 1.0);
    h.ewma_seconds = current + alpha * (seconds - current);
  }
  h.ewma_at = now;
}

bool parseLoadReport(std::string_view header, double& queue_depth, double& kv_utilization) {
  std::string_view v = header;
  if (v.starts_with("TEXT ")) v.remove_prefix(5);
  bool any = false;
  while (!v.empty()) {
    auto comma = v.find(',');
    std::string_view item = v.substr(0, comma);
    v = comma == std::string_view::npos ? std::string_view{} : v.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    auto eq = item.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view key = item.substr(0, eq), value = item.substr(eq + 1);
    if (key.starts_with("named_metrics.")) key.remove_prefix(14);
    double d = 0;
    auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), d);
    if (ec != std::errc() || p != value.data() + value.size() || !(d >= 0)) continue;
    if (key == "queue_depth" || key == "num_requests_waiting") {
      queue_depth = d;
      any = true;
    } else if (key == "kv_cache_utilization" || key == "kv_cache_usage_perc") {
      kv_utilization = std::min(d, 1.0);
      any = true;
    }
  }
  return any;
}

std::uint64_t hashKey(std::string_view key) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : key) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

int pickEndpoint(const config::ModelConfig& model, EndpointStates& states, std::uint32_t& rr_counter,
                 std::mt19937_64& rng, const PickRequest& req) {
  const auto& eps = model.endpoints;
  const std::size_t n = eps.size();
  if (n == 1) return !req.tried[0] && regionAllowed(eps[0], req) ? 0 : -1;  // nothing to choose
  const auto now = req.now;
  // Each endpoint's state and filters, looked up once per pick (on the
  // stack for the usual pool sizes).
  struct Candidate {
    EndpointHealth* health;
    std::uint64_t tier;
    bool allowed;  // passes the region filters
    bool available;
  };
  std::array<Candidate, 32> small;
  std::vector<Candidate> large;
  Candidate* c = small.data();
  if (n > small.size()) {
    large.resize(n);
    c = large.data();
  }
  // Localities, nearest first: own zone, own region, then by priority.
  // Without locality, priority alone orders them.
  const bool by_place = model.locality.enabled && req.self != nullptr;
  bool one_tier = true;
  for (std::size_t i = 0; i < n; ++i) {
    const auto& ep = eps[i];
    c[i].health = &states.get(ep.key);
    c[i].allowed = regionAllowed(ep, req);
    c[i].available = c[i].health->available(now);
    if (!by_place) c[i].tier = ep.priority;
    else if (!req.self->zone.empty() && ep.zone == req.self->zone) c[i].tier = 0;
    else if (!req.self->region.empty() && ep.region == req.self->region) c[i].tier = 1;
    else c[i].tier = 2 + std::uint64_t{ep.priority};
    one_tier = one_tier && c[i].tier == c[0].tier;
  }
  auto allowed = [&](std::size_t i) { return !req.tried[i] && c[i].allowed; };
  auto available = [&](std::size_t i) { return c[i].available; };
  auto tier = [&](std::size_t i) { return c[i].tier; };
  // The nearest locality whose healthy share reaches the threshold; else the
  // nearest with any available endpoint; else (nothing available at all)
  // the nearest with an allowed one, health ignored: better a doubtful
  // endpoint than a certain 503.
  std::uint64_t chosen = kNoTier, first_available = kNoTier, first_allowed = kNoTier;
  for (std::uint64_t prev = 0, t = kNoTier;; prev = t + 1, t = kNoTier) {
    for (std::size_t i = 0; i < n; ++i)
      if (c[i].allowed && tier(i) >= prev) t = std::min(t, tier(i));
    if (t == kNoTier) break;
    std::size_t members = 0, healthy = 0, usable = 0, untried = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (tier(i) != t || !c[i].allowed) continue;
      ++members;
      healthy += available(i);
      untried += !req.tried[i];
      usable += !req.tried[i] && available(i);
    }
    if (usable > 0 && (one_tier || healthy * 100 >= members * model.locality.spillover_threshold_percent)) {
      chosen = t;
      break;
    }
    if (usable > 0 && first_available == kNoTier) first_available = t;
    if (untried > 0 && first_allowed == kNoTier) first_allowed = t;
    if (one_tier || t == kNoTier - 1) break;
  }
  bool need_available = true;
  if (chosen == kNoTier) chosen = first_available;
  if (chosen == kNoTier) {
    chosen = first_allowed;
    need_available = false;
  }
  if (chosen == kNoTier) return -1;

  auto eligible = [&](std::size_t i) {
    return allowed(i) && tier(i) == chosen && (!need_available || available(i));
  };
  std::size_t count = 0;
  for (std::size_t i = 0; i < n; ++i) count += eligible(i);
  if (count == 0) return -1;
  // The eligible endpoint of the given rank (0-based) in endpoint order.
  auto nth = [&](std::size_t rank) {
    for (std::size_t i = 0; i < n; ++i)
      if (eligible(i) && rank-- == 0) return i;
    return n;  // not reached: rank < count
  };
  if (count == 1) return static_cast<int>(nth(0));

  switch (model.lb.policy) {
    case config::LbPolicy::RoundRobin: {
      // Weighted: the counter walks the weight line; the first eligible
      // endpoint at or after that point takes the request.
      std::uint32_t point = rr_counter++ % std::max<std::uint32_t>(1, model.total_weight);
      std::size_t start = 0;
      for (; start < n; ++start) {
        if (point < eps[start].weight) break;
        point -= eps[start].weight;
      }
      for (std::size_t k = 0; k < n; ++k)
        if (eligible((start + k) % n)) return static_cast<int>((start + k) % n);
      return static_cast<int>(nth(0));
    }
    case config::LbPolicy::ConsistentHash: {
      // Rendezvous hashing (weighted): every endpoint scores the key; the
      // best score wins unless it already carries more than its bounded
      // share of the load, then the next best.
      auto score = [&](std::size_t i) {
        const double u = (static_cast<double>(mix(req.hash ^ eps[i].key) >> 11) + 0.5) * 0x1.0p-53;
        return -static_cast<double>(eps[i].weight) / std::log(u);
      };
      std::int64_t total = 0;
      for (std::size_t i = 0; i < n; ++i)
        if (eligible(i)) total += c[i].health->outstanding;
      const double bound =
          std::ceil(model.lb.bounded_load_factor * static_cast<double>(total + 1) / static_cast<double>(count));
      double below = std::numeric_limits<double>::infinity();
      for (std::size_t round = 0; round < count; ++round) {
        std::size_t best = n;
        double best_score = -1;
        for (std::size_t i = 0; i < n; ++i) {
          if (!eligible(i)) continue;
          const double s = score(i);
          if (s < below && s > best_score) {
            best = i;
            best_score = s;
          }
        }
        if (best == n) break;
        if (static_cast<double>(c[best].health->outstanding + 1) <= bound) return static_cast<int>(best);
        below = best_score;
      }
      return static_cast<int>(nth(0));
    }
    default:
      break;
  }

  // The two-choice policies: two distinct random candidates, the lower cost
  // wins. Cost per unit of weight.
  auto cost = [&](std::size_t i) -> double {
    const auto& h = *c[i].health;
    const double inflight = static_cast<double>(h.outstanding);
    double c = inflight;
    if (model.lb.policy == config::LbPolicy::Ewma) {
      // Unmeasured endpoints look fast, so they get measured.
      c = (currentEwma(h, now) + 1e-3) * (inflight + 1);
    } else if (model.lb.policy == config::LbPolicy::LoadAware && h.reported_at != Clock::time_point{}) {
      const double half_life = std::chrono::duration<double>(model.lb.load_report_half_life).count();
      c += halvings(now - h.reported_at, half_life) *
           (h.reported_queue_depth + kKvCacheWeight * h.reported_kv_utilization);
    }
    return c / eps[i].weight;
  };
  std::uniform_int_distribution<std::size_t> first(0, count - 1), second(0, count - 2);
  const std::size_t ra = first(rng);
  std::size_t rb = second(rng);
  if (rb >= ra) ++rb;
  const std::size_t a = nth(ra), b = nth(rb);
  return static_cast<int>(cost(b) < cost(a) ? b : a);
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
