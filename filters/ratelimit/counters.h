#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/config/rate_limits.h"
#include "proxy/ratelimit/gcra.h"

namespace infermesh::ratelimit {

class RedisStore;

// Tokens (or requests) of one global window that this proxy leased from the
// fleet's bucket in Redis and spends locally, so the request path never
// waits on Redis while the lease lasts. When it runs below half a block the
// next block is fetched in the background. Spending may take `held` below
// zero by at most one block while a fetch is on its way (a stream's tokens
// that were already generated); the next block pays that back first. That
// is the fleet's overshoot bound: one block per proxy and window.
class Lease {
 public:
  Lease(std::shared_ptr<RedisStore> store, std::string key, const config::LimitWindow& w, std::int64_t block);

  enum class Result { Granted, NeedFetch, Dry, StoreDown };
  // Spends `n` if the lease holds them; otherwise says why not (a fetch is
  // started when one may help).
  Result take(std::int64_t n);
  // Spends `n` whatever is held, down to -block: false when even that is
  // past (the fleet's bucket is dry and this proxy's debt is a block).
  bool charge(std::int64_t n);
  void give(std::int64_t n);
  // Runs `fn` (on the store's thread) when the fetch now running, or one
  // started for `want`, completes.
  void whenFetched(std::int64_t want, std::function<void()> fn);

  std::int64_t held() const { return held_.load(std::memory_order_relaxed); }
  std::int64_t fleetRemaining() const { return fleet_remaining_.load(std::memory_order_relaxed); }
  GcraBucket::Micros retryAfter() const;
  GcraBucket::Micros resetAfter() const;
  bool storeDown() const { return store_down_.load(std::memory_order_relaxed); }
  std::int64_t block() const { return block_; }

 private:
  void fetch(std::int64_t want);
  void fetched(bool ok, std::int64_t granted, std::int64_t remaining, double retry_us, double reset_us);

  std::shared_ptr<RedisStore> store_;
  const std::string key_;
  const std::int64_t capacity_;
  const std::chrono::milliseconds window_;
  const std::int64_t block_;
  std::atomic<std::int64_t> held_{0};
  std::atomic<bool> fetching_{false};
  std::atomic<bool> store_down_{false};
  std::atomic<std::int64_t> fleet_remaining_{-1};
  std::atomic<double> dry_until_{0};  // steady-clock micros
  std::atomic<double> reset_at_{0};
  std::mutex waiters_mu_;  // the rare path: a lease that ran out
  std::vector<std::function<void()>> waiters_;
};

// The counters of one limit for one combination of its keys: a bucket (or
// a lease, for global limits) per window. Outlives snapshots: a reload that
// keeps the limit keeps what it counted.
struct Counter {
  std::string key;  // limit signature and key values, also the Redis key
  std::vector<std::unique_ptr<GcraBucket>> buckets;  // local windows
  std::vector<std::unique_ptr<Lease>> leases;        // global windows
};

// Every counter of this proxy, shared by its workers. Each worker finds
// its counters in a cache of its own; the shared table (behind a mutex) is
// consulted only the first time a worker meets a key.
class CounterTable {
 public:
  static CounterTable& instance();
  // `store`: where a global limit's leases come from (null: local limit).
  Counter& find(const config::RateLimitConfig& limit, std::string_view key_values, const std::shared_ptr<RedisStore>& store);
  std::size_t size();
  // Counters beyond this many fold into one per limit (keys chosen by
  // clients must not grow memory without bound); counted.
  static constexpr std::size_t kMaxCounters = 200000;
  std::atomic<std::uint64_t> folded{0};

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  CounterTable();
};

// Output tokens observed per tenant and model, for the expected output of a
// request that gives no max_tokens: a high percentile of what such
// requests produced, as a log-scale histogram of relaxed atomics.
class ObservedOutput {
 public:
  static ObservedOutput& instance();
  void record(std::string_view tenant, std::string_view model, std::int64_t tokens);
  // The 95th percentile (the upper edge of its bucket), or 0 before 20 samples.
  std::int64_t p95(std::string_view tenant, std::string_view model);

 private:
  struct Histogram {
    std::array<std::atomic<std::uint64_t>, 24> buckets{};  // bucket i: tokens < 2^i
    std::atomic<std::uint64_t> count{0};
  };
  Histogram& histogram(std::string_view tenant, std::string_view model);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  ObservedOutput();
};

}  // namespace infermesh::ratelimit
