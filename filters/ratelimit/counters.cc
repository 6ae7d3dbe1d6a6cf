#include "filters/ratelimit/counters.h"

#include <unordered_map>

#include "proxy/ratelimit/redis_store.h"

namespace infermesh::ratelimit {

namespace {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

}  // namespace

Lease::Lease(std::shared_ptr<RedisStore> store, std::string key, const config::LimitWindow& w, std::int64_t block)
    : store_(std::move(store)), key_(std::move(key)), capacity_(w.capacity), window_(w.window),
      block_(std::max<std::int64_t>(1, std::min(block, w.capacity))) {}

Lease::Result Lease::take(std::int64_t n) {
  std::int64_t held = held_.load(std::memory_order_relaxed);
  while (held >= n) {
    if (held_.compare_exchange_weak(held, held - n, std::memory_order_relaxed)) {
      if (held - n < block_ / 2) fetch(block_);
      return Result::Granted;
    }
  }
  if (store_down_.load(std::memory_order_relaxed) && !fetching_.load(std::memory_order_relaxed)) {
    fetch(std::max(block_, n));  // try again: recovery needs no restart
    return Result::StoreDown;
  }
  if (GcraBucket::now() < dry_until_.load(std::memory_order_relaxed)) return Result::Dry;
  if (n > capacity_) return Result::Dry;  // would never fit
  return Result::NeedFetch;
}

bool Lease::charge(std::int64_t n) {
  std::int64_t held = held_.load(std::memory_order_relaxed);
  for (;;) {
    if (held - n < -block_) {
      fetch(block_);
      return false;
    }
    if (held_.compare_exchange_weak(held, held - n, std::memory_order_relaxed)) break;
  }
  if (held - n < block_ / 2) fetch(block_);
  return true;
}

void Lease::give(std::int64_t n) {
  if (n <= 0) return;
  const std::int64_t after = held_.fetch_add(n, std::memory_order_relaxed) + n;
  // More than two blocks idle here: the fleet can use the surplus.
  if (after > 2 * block_) {
    const std::int64_t surplus = after - block_;
    std::int64_t expected = after;
    if (held_.compare_exchange_strong(expected, after - surplus, std::memory_order_relaxed))
      store_->give(key_, surplus, capacity_, window_);
  }
}

void Lease::whenFetched(std::int64_t want, std::function<void()> fn) {
  {
    std::lock_guard lock(waiters_mu_);
    waiters_.push_back(std::move(fn));
  }
  fetch(std::max(block_, want));
}

void Lease::fetch(std::int64_t want) {
  bool expected = false;
  if (!fetching_.compare_exchange_strong(expected, true)) return;
  // What this proxy owes (a negative lease) is fetched on top.
  const std::int64_t debt = std::max<std::int64_t>(0, -held_.load(std::memory_order_relaxed));
  want = std::min(capacity_, want + debt);
  store_->take(key_, want, capacity_, window_, [this](const TakeResult& r) {
    fetched(r.ok, r.granted, r.remaining, static_cast<double>(r.retry_after.count()),
            static_cast<double>(r.reset_after.count()));
  });
}

void Lease::fetched(bool ok, std::int64_t granted, std::int64_t remaining, double retry_us, double reset_us) {
  const double now = GcraBucket::now();
  store_down_.store(!ok, std::memory_order_relaxed);
  if (ok) {
    held_.fetch_add(granted, std::memory_order_relaxed);
    fleet_remaining_.store(remaining, std::memory_order_relaxed);
    dry_until_.store(retry_us > 0 ? now + retry_us : 0, std::memory_order_relaxed);
    reset_at_.store(now + reset_us, std::memory_order_relaxed);
  }
  fetching_.store(false);
  std::vector<std::function<void()>> run;
  {
    std::lock_guard lock(waiters_mu_);
    run.swap(waiters_);
  }
  for (auto& fn : run) fn();
}

GcraBucket::Micros Lease::retryAfter() const {
  return std::max(0.0, dry_until_.load(std::memory_order_relaxed) - GcraBucket::now());
}

GcraBucket::Micros Lease::resetAfter() const {
  return std::max(0.0, reset_at_.load(std::memory_order_relaxed) - GcraBucket::now());
}

struct CounterTable::Impl {
  std::mutex mu;
  StringMap<std::unique_ptr<Counter>> counters;  // never shrinks: pointers stay valid
};

CounterTable::CounterTable() : impl_(std::make_unique<Impl>()) {}

CounterTable& CounterTable::instance() {
  static CounterTable* table = new CounterTable();  // lives as long as the workers that use it
  return *table;
}

std::size_t CounterTable::size() {
  std::lock_guard lock(impl_->mu);
  return impl_->counters.size();
}

Counter& CounterTable::find(const config::RateLimitConfig& limit, std::string_view key_values,
                            const std::shared_ptr<RedisStore>& store) {
  thread_local StringMap<Counter*> cache;
  thread_local std::string key;
  key.assign(limit.signature);
  key += '|';
  key.append(key_values);
  if (auto it = cache.find(std::string_view(key)); it != cache.end()) return *it->second;
  std::lock_guard lock(impl_->mu);
  const std::string looked_up = key;  // the worker's cache keeps this, even when folded
  auto it = impl_->counters.find(std::string_view(key));
  if (it == impl_->counters.end()) {
    if (impl_->counters.size() >= kMaxCounters) {
      folded.fetch_add(1, std::memory_order_relaxed);
      key.assign(limit.signature + "|*");
      it = impl_->counters.find(std::string_view(key));
    }
  }
  if (it == impl_->counters.end()) {
    auto c = std::make_unique<Counter>();
    c->key = key;
    for (std::size_t i = 0; i < limit.windows.size(); ++i) {
      const auto& w = limit.windows[i];
      if (limit.global && store) {
        c->leases.push_back(std::make_unique<Lease>(store, key + "|" + std::to_string(i), w, w.tokens ? limit.block
                                                                        : std::max<std::int64_t>(1, w.capacity / 50)));
        c->buckets.push_back(nullptr);
      } else {
        c->buckets.push_back(std::make_unique<GcraBucket>(w.capacity, w.window));
        c->leases.push_back(nullptr);
      }
    }
    it = impl_->counters.emplace(key, std::move(c)).first;
  }
  cache.emplace(looked_up, it->second.get());
  return *it->second;
}

struct ObservedOutput::Impl {
  std::mutex mu;
  StringMap<std::unique_ptr<Histogram>> by_key;
};

ObservedOutput::ObservedOutput() : impl_(std::make_unique<Impl>()) {}

ObservedOutput& ObservedOutput::instance() {
  static ObservedOutput* o = new ObservedOutput();
  return *o;
}

ObservedOutput::Histogram& ObservedOutput::histogram(std::string_view tenant, std::string_view model) {
  thread_local StringMap<Histogram*> cache;
  thread_local std::string key;
  key.assign(tenant);
  key += '|';
  key.append(model);
  if (auto it = cache.find(std::string_view(key)); it != cache.end()) return *it->second;
  std::lock_guard lock(impl_->mu);
  const std::string looked_up = key;
  auto it = impl_->by_key.find(std::string_view(key));
  if (it == impl_->by_key.end()) {
    if (impl_->by_key.size() >= CounterTable::kMaxCounters) key = "*";
    it = impl_->by_key.find(std::string_view(key));
    if (it == impl_->by_key.end()) it = impl_->by_key.emplace(key, std::make_unique<Histogram>()).first;
  }
  cache.emplace(looked_up, it->second.get());
  return *it->second;
}

void ObservedOutput::record(std::string_view tenant, std::string_view model, std::int64_t tokens) {
  auto& h = histogram(tenant, model);
  std::size_t b = 0;
  while (b + 1 < h.buckets.size() && (std::int64_t{1} << b) <= tokens) ++b;
  h.buckets[b].fetch_add(1, std::memory_order_relaxed);
  h.count.fetch_add(1, std::memory_order_relaxed);
}

std::int64_t ObservedOutput::p95(std::string_view tenant, std::string_view model) {
  auto& h = histogram(tenant, model);
  const std::uint64_t n = h.count.load(std::memory_order_relaxed);
  if (n < 20) return 0;
  const std::uint64_t want = n - n / 20;
  std::uint64_t seen = 0;
  for (std::size_t b = 0; b < h.buckets.size(); ++b) {
    seen += h.buckets[b].load(std::memory_order_relaxed);
    if (seen >= want) return std::int64_t{1} << b;
  }
  return std::int64_t{1} << (h.buckets.size() - 1);
}

}  // namespace infermesh::ratelimit
