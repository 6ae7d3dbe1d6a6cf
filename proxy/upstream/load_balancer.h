#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "proxy/config/snapshot.h"

namespace infermesh::upstream {

using Clock = std::chrono::steady_clock;

enum class ActiveHealth : std::uint8_t { Unknown, Healthy, Unhealthy };

// What one worker knows about one endpoint (keyed by EndpointConfig::key, so
// it survives reloads). Per worker: no sharing, no locks. The active health
// state is the exception in origin only: the health checker thread posts it
// to every worker.
struct EndpointHealth {
  std::int64_t outstanding = 0;  // requests in flight from this worker
  // Passive outlier detection.
  std::uint32_t consecutive_failures = 0;
  std::uint32_t ejections = 0;  // how often it was ejected (the backoff grows)
  Clock::time_point ejected_until{};
  // Resting after a 429 with Retry-After.
  Clock::time_point cooldown_until{};
  ActiveHealth active = ActiveHealth::Unknown;
  bool alpn_h2 = false;  // TLS negotiated HTTP/2 with it (upstreamProtocol: auto)
  // Decayed average time to first byte, in seconds (0: never measured).
  double ewma_seconds = 0;
  Clock::time_point ewma_at{};
  // Last ORCA load report.
  double reported_queue_depth = 0;
  double reported_kv_utilization = 0;
  Clock::time_point reported_at{};

  bool available(Clock::time_point now) const {
    return ejected_until <= now && cooldown_until <= now && active != ActiveHealth::Unhealthy;
  }
};

class EndpointStates {
 public:
  EndpointHealth& get(std::uint64_t key) { return states_[key]; }

 private:
  std::unordered_map<std::uint64_t, EndpointHealth> states_;
};

// Where this proxy runs, for locality-aware picking.
struct SelfLocality {
  std::string region;
  std::string zone;
};

// One pick's inputs besides the model and the worker's state.
struct PickRequest {
  const std::vector<bool>& tried;  // endpoints already tried for this request
  Clock::time_point now;
  std::uint64_t hash = 0;  // consistent_hash key
  // Hard region filters (residency): an endpoint must be in every non-empty
  // list. Never relaxed.
  const std::vector<std::string>* allowed_regions = nullptr;
  const std::vector<std::string_view>* request_regions = nullptr;
  const SelfLocality* self = nullptr;
};

// Picks the endpoint (index into model.endpoints) for the next attempt, or
// -1 when no untried endpoint may serve. Unavailable endpoints (ejected,
// resting after a 429, failing active health checks) are skipped unless
// nothing else is left. With locality on, the nearest locality that is
// healthy enough is used.
int pickEndpoint(const config::ModelConfig& model, EndpointStates& states, std::uint32_t& rr_counter,
                 std::mt19937_64& rng, const PickRequest& req);

// Whether an endpoint passes the request's hard region filters.
bool regionAllowed(const config::EndpointConfig& ep, const PickRequest& req);

// Records an attempt's outcome for outlier detection. Returns true when
// this failure ejected the endpoint.
bool recordOutcome(const config::ModelConfig& model, EndpointStates& states, std::size_t endpoint, bool success,
                   Clock::time_point now);

// Feeds a time-to-first-byte sample into the endpoint's peak EWMA: higher
// samples take effect at once, lower ones are averaged in.
void recordLatency(EndpointHealth& h, double seconds, Clock::time_point now);
// The EWMA as of `now`: it halves every 10 s without samples, so a slow
// endpoint is tried again once it has had time to recover.
double currentEwma(const EndpointHealth& h, Clock::time_point now);

// Parses an ORCA `endpoint-load-metrics` header (TEXT form:
// "TEXT named_metrics.queue_depth=3, named_metrics.kv_cache_utilization=0.4"
// or the plain keys). Returns false when it carries nothing usable.
bool parseLoadReport(std::string_view header, double& queue_depth, double& kv_utilization);

// Stable 64-bit hash (FNV-1a) for consistent-hash keys.
std::uint64_t hashKey(std::string_view key);

}  // namespace infermesh::upstream
