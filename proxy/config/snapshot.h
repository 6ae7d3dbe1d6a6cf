#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "proxy/common/cidr.h"
#include "proxy/common/path_normalizer.h"
#include "proxy/config/access_log.h"
#include "proxy/config/governance.h"
#include "proxy/config/rate_limits.h"
#include "proxy/filter/filter.h"

namespace infermesh::tls {
class ClientContext;
}

namespace infermesh::config {

// The compiled, validated, immutable configuration. Workers read it through a
// std::shared_ptr<const Snapshot>; nothing here is changed after compile.

struct EndpointConfig {
  std::string address;  // as configured, for logs
  std::string host;     // as configured (TLS server name by default)
  std::string ip;       // resolved at compile time
  std::uint16_t port = 0;
  std::uint64_t key = 0;  // stable across snapshots: identifies the upstream pool
  std::string region;
  std::string zone;
  std::uint32_t weight = 1;
  std::uint32_t priority = 0;  // lower first, after zone and region
  std::uint32_t capacity = 0;  // concurrent generations (batch slots); 0: learn it
};

enum class LbPolicy { LeastRequest, RoundRobin, Ewma, ConsistentHash, LoadAware };

struct LoadBalancerConfig {
  LbPolicy policy = LbPolicy::LeastRequest;
  std::string hash_header;  // consistent_hash key header (lowercase); empty: prompt prefix
  std::uint32_t hash_prompt_prefix_bytes = 256;
  double bounded_load_factor = 1.25;
  std::chrono::milliseconds load_report_half_life{1000};
};

// Out-of-band load reports (polled with the health checks).
struct LoadReportConfig {
  std::string path;  // empty: reports only ride on responses
  std::chrono::milliseconds interval{1000};
  std::chrono::milliseconds timeout{500};
  bool enabled() const { return !path.empty(); }
};

struct HealthCheckConfig {
  std::string path;  // empty: no active health checks
  std::chrono::milliseconds interval{5000};
  std::chrono::milliseconds timeout{1000};
  std::chrono::milliseconds jitter{0};
  std::uint32_t healthy_threshold = 1;
  std::uint32_t unhealthy_threshold = 2;
  bool enabled() const { return !path.empty(); }
};

// Per proxy; each worker enforces its share (see per_worker()).
struct CircuitBreakerConfig {
  std::uint32_t max_connections = 0;  // 0: unlimited
  std::uint32_t max_requests = 0;
  std::uint32_t max_pending_requests = 0;
  std::chrono::milliseconds max_queue_time{5000};
};

struct ActivationConfig {
  std::string webhook;  // http://host:port/path as written
  std::string ip;       // resolved
  std::uint16_t port = 0;
  std::string host_header;
  std::string path;
  std::chrono::milliseconds queue_timeout{30000};
  std::uint32_t max_queued = 100;
  bool enabled() const { return !webhook.empty(); }
};

struct UpstreamTlsConfig {
  std::string ca_file;  // empty: plain TCP
  std::string server_name;
  std::vector<std::string> spiffe_ids;
  std::string cert_file;
  std::string key_file;
  bool enabled() const { return !ca_file.empty(); }
  bool operator==(const UpstreamTlsConfig&) const = default;
};

struct LocalityConfig {
  bool enabled = false;
  std::uint32_t spillover_threshold_percent = 70;
};

struct OutlierConfig {
  std::uint32_t consecutive_failures = 5;  // 0: off
  std::chrono::milliseconds base_ejection{30000};
  std::uint32_t max_ejection_percent = 50;
};

// How a model's requests are framed; the router parses and rewrites the
// body by this, never by what the client's content-type claims.
enum class BodyFormat : std::uint8_t { OpenAi, OpenInference };

// A credential added to every request toward a model's endpoints; the
// value is read by the proxy from the file (never part of config).
struct UpstreamCredentialConfig {
  std::string header;  // lowercase
  std::string value_file;
  std::string prefix;
  bool enabled() const { return !value_file.empty(); }
};

struct ModelConfig {
  std::string name;
  BodyFormat body_format = BodyFormat::OpenAi;
  std::string upstream_model;  // sent to the backend in `model`
  std::vector<std::string> aliases;
  std::vector<std::string> capabilities;
  std::vector<EndpointConfig> endpoints;
  std::chrono::milliseconds connect_timeout{2000};
  // Below the usual 5 s server keep-alive, so the proxy closes first.
  std::chrono::milliseconds upstream_idle_timeout{4000};  // 0: no reuse
  LoadBalancerConfig lb;
  OutlierConfig outlier;
  HealthCheckConfig health_check;
  LoadReportConfig load_report;
  CircuitBreakerConfig circuit_breakers;
  ActivationConfig activation;
  LocalityConfig locality;
  bool upstream_h2 = false;    // endpoints speak HTTP/2
  bool upstream_auto = false;  // ALPN decides (with upstream TLS)
  UpstreamTlsConfig upstream_tls;
  std::uint32_t context_window = 0;  // tokens; 0: unknown
  double price_in_per_1k = 0;
  double price_out_per_1k = 0;
  double price_cached_in_per_1k = 0;
  std::vector<std::string> regions;
  UpstreamCredentialConfig upstream_credential;
  // Added to every upstream request (names lowercase, sorted), replacing
  // a client's of the same name.
  std::vector<std::pair<std::string, std::string>> upstream_headers;
  bool setsHeader(std::string_view name) const;
  // What `in` input tokens (`cached` of them served from the engine's
  // prompt cache) and `out` output tokens cost, in the pricing's currency.
  double cost(std::int64_t in, std::int64_t cached, std::int64_t out) const {
    cached = cached < 0 ? 0 : (cached > in ? in : cached);
    return (static_cast<double>(in - cached) * price_in_per_1k + static_cast<double>(cached) * price_cached_in_per_1k +
            static_cast<double>(out) * price_out_per_1k) /
           1000.0;
  }
  bool hasCapability(std::string_view c) const {
    for (const auto& x : capabilities)
      if (x == c) return true;
    return false;
  }
  std::uint32_t total_weight = 0;
  std::uint32_t index = 0;     // position in Snapshot::models
  std::uint32_t stats_id = 0;  // see stats::NameTable
};

struct HeaderMatch {
  std::string name;
  std::string value;  // empty: present with any value
};

struct FallbackConfig {
  const ModelConfig* model = nullptr;
  bool on_connect_failure = false;
  bool on_429 = false;
  bool on_5xx = false;
  bool on_timeout = false;
  bool on_context_length = false;
};

struct WeightedModel {
  const ModelConfig* model = nullptr;
  std::uint32_t weight = 0;
};

struct MirrorConfig {
  const ModelConfig* model = nullptr;
  double percent = 0;
};

enum class Objective { Cheapest, Fastest, Preference };

// Capability ("modelless") selection. Only a route that configures it
// selects: the route, never the request, bounds which models are reachable.
struct AutoSelectConfig {
  bool enabled = false;
  Objective objective = Objective::Cheapest;
  std::vector<const ModelConfig*> candidates;  // empty: any model with the capability
  std::string capability = "chat";             // when the request names none
  std::vector<std::string> capabilities;       // a request may name; empty: only `capability`
  bool allows(std::string_view c) const {
    if (!candidates.empty() || c == capability) return true;
    for (const auto& x : capabilities)
      if (x == c) return true;
    return false;
  }
};

struct RetryConfig {
  std::uint32_t attempts = 1;
  bool on_connect_failure = true;
  bool on_reset = false;
  bool on_5xx = false;
  bool on_429 = false;
  bool on_timeout = false;
  std::uint32_t budget_percent = 20;
  std::uint32_t min_concurrency = 3;
  std::chrono::milliseconds base_backoff{25};
  std::chrono::milliseconds max_backoff{250};
  bool retry_non_idempotent = false;
};

// Lower sheds first.
enum class Priority : std::uint8_t { Low = 0, Normal = 1, Critical = 2 };

// Whether the router holds an upstream response head until its first body
// byte (a failure in between can then still be retried or fall back).
enum class HeadHold : std::uint8_t { Streaming, Always, Never };

struct RouteConfig {
  std::string name;
  std::vector<std::uint32_t> listeners;  // empty: all
  std::string path_exact;
  std::string path_prefix;
  std::vector<HeaderMatch> headers;
  std::vector<std::uint32_t> models;  // accepted model indexes; empty: any
  const ModelConfig* target = nullptr;  // nullptr: the model named in the body
  std::chrono::milliseconds request_timeout{0};  // 0: none
  std::chrono::milliseconds idle_timeout{300000};
  std::chrono::milliseconds first_token_timeout{0};  // 0: none
  HeadHold head_hold = HeadHold::Streaming;
  // Route-specific configs for filters of the listener's chain, by name.
  std::vector<filter::RouteFilterOverride> filter_overrides;
  std::vector<FallbackConfig> fallbacks;
  std::vector<WeightedModel> split;  // instead of target
  std::uint32_t split_total = 0;
  std::vector<MirrorConfig> mirrors;
  AutoSelectConfig auto_select;
  RetryConfig retry;
  Priority priority = Priority::Normal;
  std::vector<std::string> residency;  // allowed endpoint regions; empty: any
  std::uint32_t stats_id = 0;
  // Whether matching needs the model name from the body (decided at compile
  // time so the router only buffers bodies when it must).
  bool needs_body_model() const { return (target == nullptr && split.empty()) || !models.empty(); }
};

struct ListenerLimits {
  std::uint32_t max_request_header_bytes = 64 * 1024;
  std::uint64_t max_request_body_bytes = 8 * 1024 * 1024;
  std::chrono::milliseconds header_timeout{30000};
  std::chrono::milliseconds body_timeout{30000};
  std::chrono::milliseconds idle_timeout{60000};
  std::uint32_t max_concurrent_streams = 100;
  std::uint32_t max_request_headers = 100;
};

enum class ListenerProtocol { Http1, Http2, Auto };

struct TlsCertificateConfig {
  std::string cert_file;
  std::string key_file;
  std::vector<std::string> server_names;
  bool operator==(const TlsCertificateConfig&) const = default;
};

struct ListenerTlsConfig {
  std::vector<TlsCertificateConfig> certificates;  // empty: no TLS
  bool tls13_only = false;
  std::string client_ca_file;  // non-empty: mTLS
  std::vector<std::string> allowed_spiffe_ids;
  std::string cipher_suites;  // TLS 1.2 suites, OpenSSL syntax; empty: kDefaultCipherSuites
  bool enabled() const { return !certificates.empty(); }
  bool operator==(const ListenerTlsConfig&) const = default;
};

struct ListenerConfig {
  std::string name;
  std::string ip;
  std::uint16_t port = 0;
  std::uint32_t index = 0;
  ListenerProtocol protocol = ListenerProtocol::Http1;
  ListenerTlsConfig tls;
  ListenerLimits limits;
  std::vector<std::shared_ptr<const filter::FilterFactory>> filters;
  std::vector<std::string> filter_names;  // parallel to filters
  std::shared_ptr<const filter::TargetResolver> resolver;  // null: filters see no route
  std::string access_log;  // path, "stdout", or empty
  AccessLogFormat access_log_format;
  common::PathNormalization path_normalization;
  // x-infermesh-* request headers are removed unless the peer is trusted
  // (its SPIFFE ID matches, or its address is inside a source network), or
  // the header is one of client_headers.
  std::vector<std::string> trusted_spiffe_ids;
  std::vector<common::Cidr> trusted_sources;
  std::vector<std::string> client_headers;
  // Audit records of request decisions (the authz filter); empty: none.
  std::string audit_log;
  std::uint64_t audit_max_bytes = 100ull << 20;
  std::uint32_t audit_keep_files = 5;
};

// Mozilla's "intermediate" TLS 1.2 suites without the DHE ones: forward
// secrecy with ECDHE only, AEAD only. TLS 1.3 suites are OpenSSL's defaults.
inline constexpr const char* kDefaultCipherSuites =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// Lets maps keyed by std::string be searched with a std::string_view.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

struct Snapshot {
  std::uint64_t version = 0;  // increases with every applied config
  std::string hash;           // content hash of the source resources
  std::vector<ListenerConfig> listeners;
  std::vector<ModelConfig> models;
  std::vector<RouteConfig> routes;  // in match order
  // Route indexes (ascending = match order) that name each model in
  // match.models, and those with no model condition. Matching walks the
  // merge of the two lists for the request's model instead of every route.
  std::vector<std::vector<std::uint32_t>> routes_naming_model;  // by model index
  std::vector<std::uint32_t> routes_any_model;
  std::unordered_map<std::string, const ModelConfig*, StringHash, std::equal_to<>> model_by_name;  // names and aliases
  // Models by capability, in source order (capability selection).
  std::unordered_map<std::string, std::vector<const ModelConfig*>, StringHash, std::equal_to<>> models_by_capability;
  std::shared_ptr<const Governance> governance;  // Tenants and Policies; null: none
  std::shared_ptr<const RateLimits> rate_limits;  // limits and budgets; null: none
  std::string dump_json;  // the source resources as JSON, for /config_dump
  // TLS client contexts by model index, attached by the proxy before the
  // snapshot is published (loading certificates is the runtime's job, not
  // the compiler's); null where a model has no upstream TLS.
  mutable std::vector<std::shared_ptr<const tls::ClientContext>> upstream_tls;
  // State filters attach before the snapshot is published (JWKS key
  // sources, per-policy metrics, audit writers), by filter::RuntimeSlot.
  mutable std::vector<std::shared_ptr<const void>> filter_runtime;
  const void* runtime(std::uint32_t slot) const {
    return slot < filter_runtime.size() ? filter_runtime[slot].get() : nullptr;
  }
  const tls::ClientContext* upstreamTls(std::uint32_t model_index) const {
    return model_index < upstream_tls.size() ? upstream_tls[model_index].get() : nullptr;
  }

  const ModelConfig* findModel(std::string_view name) const {
    auto it = model_by_name.find(name);
    return it == model_by_name.end() ? nullptr : it->second;
  }
  const std::vector<const ModelConfig*>& modelsWith(std::string_view capability) const {
    static const std::vector<const ModelConfig*> kNone;
    auto it = models_by_capability.find(capability);
    return it == models_by_capability.end() ? kNone : it->second;
  }
  const ListenerConfig* findListener(std::string_view name) const {
    for (const auto& l : listeners)
      if (l.name == name) return &l;
    return nullptr;
  }
};

}  // namespace infermesh::config
