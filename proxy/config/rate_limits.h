#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace infermesh::config {

struct ModelConfig;

// Token and request limits and cost budgets, compiled
// (docs/rate-limits.md). Immutable, part of the Snapshot; the ratelimit
// filter reads it and keeps the counters, which outlive snapshots.

// The keys a limit counts by (bits).
enum LimitKey : std::uint8_t { kByTenant = 1, kByApiKey = 2, kByModel = 4, kByRoute = 8 };

// One window of a limit: `capacity` requests or tokens per `window`.
struct LimitWindow {
  bool tokens = false;  // else requests
  std::chrono::milliseconds window{0};
  std::int64_t capacity = 0;
  const char* unit() const;  // "requests" or "tokens"
};

struct RateLimitConfig {
  std::string name;  // "Tenant/team-a/tpm": unique, the metrics' label and the counters' key
  std::uint8_t per = 0;          // LimitKey bits, the owner's own key included
  std::vector<LimitWindow> windows;  // requests first, then tokens
  bool global = false;
  bool finish = true;        // on_exhausted: finish (else allow)
  bool fail_open = true;     // global, Redis unreachable
  std::int64_t output_floor = 256;
  std::int64_t block = 0;    // global: tokens leased at a time
  std::uint32_t index = 0;   // in RateLimits::limits
  // The config-independent identity of the counters: name, keys and
  // windows. A counter carries over a reload while it stays the same.
  std::string signature;
  bool countsTokens() const {
    for (const auto& w : windows)
      if (w.tokens) return true;
    return false;
  }
};

// Microunits of the pricing's currency (1e-6), so sums are exact.
using Micros = std::int64_t;

struct BudgetConfig {
  std::string tenant;
  Micros per_hour = 0, per_day = 0, per_month = 0;  // 0: no budget for that window
  bool per_api_key = false;
  bool global = false;
  bool downgrade = false;
  bool fail_open = true;
};

struct TokenizerRef {
  std::string file;      // empty: estimate
  std::string encoding;  // cl100k_base, o200k_base
};

struct RateLimits {
  std::vector<RateLimitConfig> limits;
  // Limit indexes by tenant index, route index and model index.
  std::vector<std::vector<std::uint32_t>> by_tenant, by_route, by_model;
  std::vector<int> budget_by_tenant;  // index into budgets, -1: none
  std::vector<BudgetConfig> budgets;
  std::vector<std::vector<const ModelConfig*>> downgrade_by_route;  // cheapest first
  std::vector<TokenizerRef> tokenizer_by_model;  // empty when no model names one
  bool anyGlobal() const {
    for (const auto& l : limits)
      if (l.global) return true;
    for (const auto& b : budgets)
      if (b.global) return true;
    return false;
  }
};

}  // namespace infermesh::config
