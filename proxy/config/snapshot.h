#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "proxy/filter/filter.h"

namespace infermesh::config {

// The compiled, validated, immutable configuration. Workers read it through a
// std::shared_ptr<const Snapshot>; nothing here is changed after compile.

struct EndpointConfig {
  std::string address;  // as configured, for logs
  std::string ip;       // resolved at compile time
  std::uint16_t port = 0;
  std::uint64_t key = 0;  // stable across snapshots: identifies the upstream pool
  std::string region;
  std::string zone;
  std::uint32_t weight = 1;
};

enum class LbPolicy { LeastRequest, RoundRobin };

struct OutlierConfig {
  std::uint32_t consecutive_failures = 5;  // 0: off
  std::chrono::milliseconds base_ejection{30000};
  std::uint32_t max_ejection_percent = 50;
};

struct ModelConfig {
  std::string name;
  std::string upstream_model;  // sent to the backend in `model`
  std::vector<std::string> aliases;
  std::vector<std::string> capabilities;
  std::vector<EndpointConfig> endpoints;
  std::chrono::milliseconds connect_timeout{2000};
  LbPolicy lb_policy = LbPolicy::LeastRequest;
  OutlierConfig outlier;
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
};

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
  std::vector<FallbackConfig> fallbacks;
  std::uint32_t stats_id = 0;
  // Whether matching needs the model name from the body (decided at compile
  // time so the router only buffers bodies when it must).
  bool needs_body_model() const { return target == nullptr || !models.empty(); }
};

struct ListenerLimits {
  std::uint32_t max_request_header_bytes = 64 * 1024;
  std::uint64_t max_request_body_bytes = 8 * 1024 * 1024;
  std::chrono::milliseconds header_timeout{30000};
  std::chrono::milliseconds body_timeout{30000};
  std::chrono::milliseconds idle_timeout{60000};
};

struct ListenerConfig {
  std::string name;
  std::string ip;
  std::uint16_t port = 0;
  std::uint32_t index = 0;
  ListenerLimits limits;
  std::vector<std::shared_ptr<const filter::FilterFactory>> filters;
  std::string access_log;  // path, "stdout", or empty
};

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
  std::string dump_json;  // the source resources as JSON, for /config_dump

  const ModelConfig* findModel(std::string_view name) const {
    auto it = model_by_name.find(name);
    return it == model_by_name.end() ? nullptr : it->second;
  }
  const ListenerConfig* findListener(std::string_view name) const {
    for (const auto& l : listeners)
      if (l.name == name) return &l;
    return nullptr;
  }
};

}  // namespace infermesh::config
