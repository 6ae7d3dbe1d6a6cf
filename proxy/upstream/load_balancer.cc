#include "proxy/upstream/load_balancer.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <limits>

namespace infermesh::upstream {
namespace {

constexpr std::uint64_t kNoTier = std::numeric_limits<std::uint64_t>::max();
constexpr double kEwmaHalfLifeSeconds = 10.0;
// A KV cache this full admits no new sequence: the endpoint counts as
// having every slot busy.
constexpr double kKvCacheFull = 0.95;
// Before a slot time is measured: a short generation.
constexpr double kDefaultSlotSeconds = 0.05;
// A first byte this much slower than the unqueued base waited in a queue.
constexpr double kQueuedFactor = 3.0;
constexpr double kQueuedMarginSeconds = 0.02;
// Load reports newer than this are the endpoint's word on its capacity;
// older ones leave learning to observed queueing.
constexpr auto kReportsTrusted = std::chrono::seconds(10);
// load_aware compares every eligible endpoint up to this many, else two
// random ones: with three endpoints, two random candidates miss the best
// one a third of the time.
constexpr std::size_t kFullScanLimit = 16;

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
  if (req.policy_regions &&
      std::find(req.policy_regions->begin(), req.policy_regions->end(), ep.region) == req.policy_regions->end())
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
    // last one (a sample after a quiet spell counts for more), but never by
    // more than kMaxFastSampleWeight: the decay already retries a slow
    // endpoint, and one lucky answer must not make it look fast.
    const double dt = std::chrono::duration<double>(now - h.ewma_at).count();
    const double alpha = std::clamp(1.0 - std::exp(-std::max(dt, 0.0) / 1.0), 0.1, kMaxFastSampleWeight);
    h.ewma_seconds = current + alpha * (seconds - current);
  }
  h.ewma_at = now;
}

void recordFirstByte(EndpointHealth& h, double seconds, std::int64_t outstanding_at_send, Clock::time_point now) {
  recordLatency(h, seconds, now);
  const double base = h.base_ttft_seconds;
  if (base == 0) {
    h.base_ttft_seconds = seconds;
  } else {
    // A low quantile: faster samples count six times as much as slower ones.
    h.base_ttft_seconds += (seconds < base ? 0.3 : 0.05) * (seconds - base);
  }
  const bool reports = h.reported_at != Clock::time_point{} && now - h.reported_at < kReportsTrusted;
  if (reports || base == 0 || outstanding_at_send < 1) return;
  const double k = static_cast<double>(outstanding_at_send);
  if (seconds > kQueuedFactor * base + kQueuedMarginSeconds) {
    // Queued with k in flight: fewer than k slots.
    if (k >= 2 && (h.learned_capacity == 0 || k - 1 < h.learned_capacity)) h.learned_capacity = k - 1;
  } else if (seconds <= 1.5 * base + 0.005 && k > h.learned_capacity) {
    h.learned_capacity = k;  // served at once with k in flight
  }
}

void recordCompletion(EndpointHealth& h, double total, double ttft) {
  const double queued = std::max(0.0, ttft - h.base_ttft_seconds);
  const double sample = std::max(total - queued, 1e-4);
  h.slot_seconds = h.slot_seconds == 0 ? sample : h.slot_seconds + 0.2 * (sample - h.slot_seconds);
}

namespace {

// "vllm:num_requests_running" -> "num_requests_running"; ORCA's
// "named_metrics." prefix likewise.
std::string_view metricName(std::string_view key) {
  if (key.starts_with("named_metrics.")) key.remove_prefix(14);
  if (auto colon = key.rfind(':'); colon != std::string_view::npos) key.remove_prefix(colon + 1);
  return key;
}

void trim(std::string_view& s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
}

}  // namespace

bool parseLoadReport(std::string_view text, LoadReport& out) {
  std::string_view v = text;
  if (v.starts_with("TEXT ")) v.remove_prefix(5);
  bool any = false;
  while (!v.empty()) {
    const auto cut = v.find_first_of(",\n");
    std::string_view item = v.substr(0, cut);
    v = cut == std::string_view::npos ? std::string_view{} : v.substr(cut + 1);
    trim(item);
    if (item.empty() || item.front() == '#') continue;
    std::string_view key, value;
    bool labelled = false;
    if (auto eq = item.find('='); eq != std::string_view::npos && item.find('{') == std::string_view::npos) {
      key = item.substr(0, eq);
      value = item.substr(eq + 1);
    } else {
      // Prometheus: name{labels} value [timestamp]
      auto brace = item.find('{');
      auto end_labels = brace == std::string_view::npos ? std::string_view::npos : item.find('}', brace);
      auto name_end = brace == std::string_view::npos ? item.find(' ') : brace;
      if (name_end == std::string_view::npos) continue;
      key = item.substr(0, name_end);
      labelled = end_labels != std::string_view::npos;
      std::string_view rest = item.substr(end_labels == std::string_view::npos ? name_end : end_labels + 1);
      trim(rest);
      value = rest.substr(0, rest.find(' '));
    }
    trim(key);
    trim(value);
    key = metricName(key);
    double d = 0;
    auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), d);
    if (ec != std::errc() || p != value.data() + value.size() || !(d >= 0) || !std::isfinite(d)) continue;
    double* field = nullptr;
    if (key == "num_requests_running" || key == "running_requests" || key == "running") field = &out.running;
    else if (key == "queue_depth" || key == "num_requests_waiting" || key == "waiting_requests" || key == "waiting")
      field = &out.waiting;
    else if (key == "kv_cache_utilization" || key == "kv_cache_usage_perc" || key == "gpu_cache_usage_perc") {
      d = std::min(d, 1.0);
      field = &out.kv_utilization;
    } else if (key == "max_num_seqs" || key == "capacity" || key == "max_concurrency")
      field = &out.capacity;
    if (field == nullptr) continue;
    // Prometheus may list a metric once per label set (several models on
    // one server): their sum is the server's load.
    const bool add = labelled && *field >= 0 && (field == &out.running || field == &out.waiting);
    const double next = add ? *field + d : d;
    if (!std::isfinite(next)) continue;  // a sum of huge values
    *field = next;
    any = true;
  }
  return any;
}

void applyLoadReport(EndpointHealth& h, const LoadReport& r, Clock::time_point now) {
  if (!r.any()) return;
  h.reported_running = std::max(0.0, r.running);
  h.reported_waiting = std::max(0.0, r.waiting);
  h.reported_kv_utilization = std::max(0.0, r.kv_utilization);
  if (r.capacity > 0) h.reported_capacity = r.capacity;
  // Requests waiting while `running` generate: that is all its slots.
  if (r.waiting > 0 && r.running >= 1) h.learned_capacity = r.running;
  else if (r.running > h.learned_capacity) h.learned_capacity = r.running;
  h.outstanding_at_report = h.outstanding;
  h.reported_at = now;
}

double effectiveCapacity(const config::EndpointConfig& ep, const EndpointHealth& h) {
  if (ep.capacity > 0) return ep.capacity;
  if (h.reported_capacity > 0) return h.reported_capacity;
  return std::max(1.0, h.learned_capacity);
}

double estimatedLoad(const EndpointHealth& h, Clock::time_point now, Clock::duration half_life) {
  const double ours = static_cast<double>(std::max<std::int64_t>(0, h.outstanding));
  if (h.reported_at == Clock::time_point{}) return ours;
  const double others = h.reported_running + h.reported_waiting - static_cast<double>(h.outstanding_at_report);
  if (others <= 0) return ours;
  return ours + others * halvings(now - h.reported_at, std::chrono::duration<double>(half_life).count());
}

double predictedTtft(const config::EndpointConfig& ep, const EndpointHealth& h, Clock::time_point now,
                     Clock::duration half_life) {
  const double capacity = effectiveCapacity(ep, h);
  double load = estimatedLoad(h, now, half_life);
  // A full KV cache starts nothing new until a sequence ends.
  if (h.reported_at != Clock::time_point{} && h.reported_kv_utilization >= kKvCacheFull &&
      now - h.reported_at < half_life)
    load = std::max(load, capacity);
  // Requests that must leave a slot before this one gets one; slots free
  // about every slot time / capacity.
  const double ahead = std::max(0.0, load + 1 - capacity);
  const double slot = h.slot_seconds > 0 ? h.slot_seconds : std::max(kDefaultSlotSeconds, 2 * h.base_ttft_seconds);
  return h.base_ttft_seconds + ahead * slot / capacity;
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

  if (model.lb.policy == config::LbPolicy::LoadAware && count <= kFullScanLimit) {
    // Capacity-aware: the lowest predicted time to first token (per unit of
    // weight) of all eligible endpoints; ties go to a random one, walking
    // from a random rank.
    const auto half_life = std::chrono::duration_cast<Clock::duration>(model.lb.load_report_half_life);
    const std::size_t start = std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
    std::size_t best = n;
    double best_cost = std::numeric_limits<double>::infinity();
    for (std::size_t k = 0; k < n; ++k) {
      const std::size_t i = (start + k) % n;
      if (!eligible(i)) continue;
      const double cost = predictedTtft(eps[i], *c[i].health, now, half_life) / eps[i].weight;
      if (cost < best_cost) {
        best = i;
        best_cost = cost;
      }
    }
    return static_cast<int>(best);
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
    } else if (model.lb.policy == config::LbPolicy::LoadAware) {
      c = predictedTtft(eps[i], h, now, std::chrono::duration_cast<Clock::duration>(model.lb.load_report_half_life));
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
