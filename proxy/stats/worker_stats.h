#pragma once

#include <array>
#include <cstdint>
#include <unordered_map>
#include <vector>

namespace infermesh::stats {

// Request duration buckets, in seconds (upper bounds; +Inf is implicit).
inline constexpr std::array<double, 14> kDurationBuckets = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60};

struct Histogram {
  std::array<std::uint64_t, kDurationBuckets.size() + 1> counts{};  // last: +Inf
  double sum = 0;
  std::uint64_t count = 0;
  void observe(double seconds) {
    std::size_t i = 0;
    while (i < kDurationBuckets.size() && seconds > kDurationBuckets[i]) ++i;
    ++counts[i];
    sum += seconds;
    ++count;
  }
  void merge(const Histogram& o) {
    for (std::size_t i = 0; i < counts.size(); ++i) counts[i] += o.counts[i];
    sum += o.sum;
    count += o.count;
  }
};

// Why the proxy answered a client itself or dropped it.
enum class DownstreamError : std::uint8_t {
  BadRequest,       // malformed HTTP or smuggling attempt -> 400
  HeaderTooLarge,   // -> 431
  BodyTooLarge,     // -> 413
  Timeout,          // -> 408
  InvalidJson,      // -> 400
  MissingModel,     // -> 400
  UnknownModel,     // -> 404
  NoRoute,          // -> 404
  BadPath,          // request target refused by path normalisation -> 400
  UntrustedHeader,  // x-infermesh-* headers removed from an untrusted client (served)
  Count
};
inline constexpr const char* kDownstreamErrorNames[] = {
    "bad_request", "header_too_large", "body_too_large", "timeout",
    "invalid_json", "missing_model", "unknown_model", "no_route", "bad_path", "untrusted_header"};

enum class UpstreamError : std::uint8_t { ConnectFailure, Timeout, ProtocolError, Reset, Count };
inline constexpr const char* kUpstreamErrorNames[] = {"connect_failure", "timeout", "protocol_error", "reset"};

// Why a request got a fast 503 (or 429) without reaching a model.
enum class ShedReason : std::uint8_t {
  MaxRequests,      // circuit breaker, nobody may wait (or low priority)
  MaxConnections,   // circuit breaker
  QueueFull,        // the overload queue had no room
  QueueTimeout,     // waited max_queue_time
  Displaced,        // a higher priority took its place in the queue
  ColdQueueFull,    // scale from zero: too many waiting already
  ColdStartTimeout, // no endpoint turned healthy in time
  RetryBudget,      // a retry was wanted but the budget was spent (not a shed: the failure went through)
  Count
};
inline constexpr const char* kShedReasonNames[] = {"max_requests",       "max_connections", "queue_full",
                                                   "queue_timeout",      "displaced",       "cold_queue_full",
                                                   "cold_start_timeout", "retry_budget"};

// Why a response that had started failed.
enum class AbortReason : std::uint8_t { Reset, IdleTimeout, FirstTokenTimeout, RequestTimeout, Other, Count };
inline constexpr const char* kAbortReasonNames[] = {"reset", "idle_timeout", "first_token_timeout", "request_timeout",
                                                    "other"};

// Why an HTTP/2 connection was sent away.
enum class Http2Protection : std::uint8_t {
  RapidReset, PingFlood, SettingsFlood, EmptyFrames, ProtocolError, StreamLimit, Count
};
inline constexpr const char* kHttp2ProtectionNames[] = {"rapid_reset", "ping_flood",     "settings_flood",
                                                        "empty_frames", "protocol_error", "stream_limit"};

// One worker's counters: plain integers, written only by that worker's
// thread. The admin thread reads them by posting a copy request to the
// worker (see MetricsCollector), so no atomics or locks are needed.
struct WorkerStats {
  // Per route and served model: responses by status class (index 0
  // counts streams that ended without a response) and their durations,
  // so a canary's latency compares with its stable model's.
  struct RouteModelStats {
    std::array<std::uint64_t, 6> by_class{};
    Histogram duration;
  };
  // (route stats id << 32 | model stats id) -> its stats.
  std::unordered_map<std::uint64_t, RouteModelStats> requests;
  std::array<std::uint64_t, static_cast<std::size_t>(DownstreamError::Count)> downstream_errors{};
  std::array<std::uint64_t, static_cast<std::size_t>(UpstreamError::Count)> upstream_errors{};
  std::uint64_t upstream_connections_opened = 0;
  std::uint64_t upstream_connections_reused = 0;
  std::uint64_t upstream_retries = 0;
  std::uint64_t upstream_ejections = 0;  // outlier detection took an endpoint out
  std::uint64_t upstream_fallbacks = 0;  // moved on to a route's fallback model
  std::array<std::uint64_t, static_cast<std::size_t>(AbortReason::Count)> streams_aborted{};
  std::array<std::uint64_t, static_cast<std::size_t>(ShedReason::Count)> shed{};
  // Mirror (shadow) requests by model stats id: sent ok, failed, dropped.
  std::unordered_map<std::uint32_t, std::array<std::uint64_t, 3>> mirrors;
  std::int64_t requests_queued = 0;  // waiting for a slot or a cold model
  std::array<std::uint64_t, static_cast<std::size_t>(Http2Protection::Count)> http2_protections{};
  // TLS handshakes by tls::HandshakeResult.
  std::array<std::uint64_t, 8> tls_handshakes{};
  // TLS handshakes toward endpoints: full, resumed, failed.
  std::array<std::uint64_t, 3> upstream_tls{};
  std::uint64_t downstream_disconnects = 0;  // client left before its response ended
  std::int64_t downstream_connections_active = 0;
  std::int64_t upstream_connections_active = 0;

  // `seconds` < 0: an answer to a malformed head, with no duration to count.
  void countRequest(std::uint32_t route_id, std::uint32_t model_id, unsigned status, double seconds = -1) {
    auto& r = requests[(std::uint64_t{route_id} << 32) | model_id];
    ++r.by_class[status >= 100 && status < 600 ? status / 100 : 0];
    if (seconds >= 0) r.duration.observe(seconds);
  }
  void count(DownstreamError e) { ++downstream_errors[static_cast<std::size_t>(e)]; }
  void count(UpstreamError e) { ++upstream_errors[static_cast<std::size_t>(e)]; }
  void count(ShedReason r) { ++shed[static_cast<std::size_t>(r)]; }
  void count(AbortReason r) { ++streams_aborted[static_cast<std::size_t>(r)]; }
  void count(Http2Protection p) { ++http2_protections[static_cast<std::size_t>(p)]; }
  // Values of the metrics filters declared (FilterMetrics), by slot; filled
  // only in the copies a scrape takes.
  std::vector<double> filter_values;
  void merge(const WorkerStats& o);
};

}  // namespace infermesh::stats
