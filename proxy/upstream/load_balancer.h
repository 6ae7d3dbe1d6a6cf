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
  // Time to first byte when not queued (a low-quantile tracker: slower
  // samples, mostly queueing, move it little), and how long a request holds
  // a batch slot (first byte to end, plus that base), both in seconds.
  double base_ttft_seconds = 0;
  double slot_seconds = 0;
  // Capacity (concurrent generations) learned from load reports and from
  // queueing seen in time to first byte; 0: not learned yet.
  double learned_capacity = 0;
  // Last load report (ORCA, on a response or polled).
  double reported_running = 0;
  double reported_waiting = 0;
  double reported_kv_utilization = 0;
  double reported_capacity = 0;  // announced by the endpoint; 0: none
  std::int64_t outstanding_at_report = 0;  // ours in flight when it arrived
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
  // Governance (filter::RequestPolicy): nullptr, any region; else the
  // endpoint's region must be listed (an empty list allows none).
  const std::vector<std::string>* policy_regions = nullptr;
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
// samples take effect at once, lower ones are averaged in with at most
// kMaxFastSampleWeight, so one fast sample never erases a slow history.
void recordLatency(EndpointHealth& h, double seconds, Clock::time_point now);
inline constexpr double kMaxFastSampleWeight = 0.3;
// The EWMA as of `now`: it halves every 10 s without samples, so a slow
// endpoint is tried again once it has had time to recover.
double currentEwma(const EndpointHealth& h, Clock::time_point now);

// A first byte from an endpoint that had `outstanding_at_send` requests of
// this worker in flight (this one included) when the request went out:
// feeds the EWMA, the unqueued base and, while no load reports arrive, the
// learned capacity (a fast answer at k in flight: at least k slots; a
// queued one: fewer).
void recordFirstByte(EndpointHealth& h, double seconds, std::int64_t outstanding_at_send, Clock::time_point now);
// A finished exchange: `total` from send to end, `ttft` to its first byte.
// The slot time excludes the wait in the endpoint's queue (ttft - base).
void recordCompletion(EndpointHealth& h, double total, double ttft);

// What a load report said; fields it did not carry are < 0.
struct LoadReport {
  double running = -1;         // generating now
  double waiting = -1;         // queued for a batch slot
  double kv_utilization = -1;  // 0..1
  double capacity = -1;        // concurrent generations it can run
  bool any() const { return running >= 0 || waiting >= 0 || kv_utilization >= 0 || capacity >= 0; }
};

// Parses a load report: the ORCA `endpoint-load-metrics` TEXT form
// ("TEXT named_metrics.num_requests_running=3, named_metrics.queue_depth=2")
// or the plain keys, comma or line separated, and Prometheus text lines
// ("vllm:num_requests_waiting{model_name=\"m\"} 2"; # lines skipped).
// Keys: running: num_requests_running, running_requests, running;
// waiting: queue_depth, num_requests_waiting, waiting_requests, waiting;
// KV cache: kv_cache_utilization, kv_cache_usage_perc, gpu_cache_usage_perc;
// capacity: max_num_seqs, capacity, max_concurrency. Fields found are set
// in `out`; returns whether any was.
bool parseLoadReport(std::string_view text, LoadReport& out);
// Stores a report as the endpoint's view of its load at `now`.
void applyLoadReport(EndpointHealth& h, const LoadReport& r, Clock::time_point now);

// Concurrent generations the endpoint runs: configured, else announced,
// else learned, else 1 (until something better is known).
double effectiveCapacity(const config::EndpointConfig& ep, const EndpointHealth& h);
// Requests at the endpoint now: this worker's in flight (exact) plus the
// others' share of the last report (reported minus ours then), which
// halves every `half_life`.
double estimatedLoad(const EndpointHealth& h, Clock::time_point now, Clock::duration half_life);
// load_aware's cost: the predicted time to first token of one more
// request, base + (requests ahead of it for a slot) x slot time / capacity.
double predictedTtft(const config::EndpointConfig& ep, const EndpointHealth& h, Clock::time_point now,
                     Clock::duration half_life);

// Stable 64-bit hash (FNV-1a) for consistent-hash keys.
std::uint64_t hashKey(std::string_view key);

}  // namespace infermesh::upstream
