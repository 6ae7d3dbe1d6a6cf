#include "filters/ratelimit/budget_ledger.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "proxy/ratelimit/redis_store.h"

namespace infermesh::ratelimit {

namespace {

struct Entry {
  // Per window: the window id the amount belongs to, and the amount.
  std::array<std::atomic<std::int64_t>, 3> window{};
  std::array<std::atomic<config::Micros>, 3> local{};
  std::array<std::atomic<config::Micros>, 3> fleet{};  // global budgets: Redis's total as last seen
  std::atomic<std::int64_t> refreshed_at{0};           // steady ms
};

std::int64_t steadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Moves an entry's window on when the clock has left it (the amount starts again).
void roll(Entry& e, const std::array<std::int64_t, 3>& ids) {
  for (int w = 0; w < 3; ++w) {
    std::int64_t cur = e.window[w].load(std::memory_order_relaxed);
    if (cur == ids[w]) continue;
    if (e.window[w].compare_exchange_strong(cur, ids[w])) {
      e.local[w].store(0, std::memory_order_relaxed);
      e.fleet[w].store(0, std::memory_order_relaxed);
    }
  }
}

}  // namespace

struct BudgetLedger::Impl {
  std::mutex mu;
  std::mutex file_mu;
  std::unordered_map<std::string, std::unique_ptr<Entry>> entries;
  std::string path;
  std::atomic<bool> dirty{false};
  std::condition_variable cv;
  std::thread flusher;

  Entry& entry(std::string_view owner) {
    thread_local std::unordered_map<std::string, Entry*> cache;
    std::string key(owner);
    if (auto it = cache.find(key); it != cache.end()) return *it->second;
    std::lock_guard lock(mu);
    auto& e = entries[key];
    if (!e) e = std::make_unique<Entry>();
    cache.emplace(std::move(key), e.get());
    return *e;
  }

  void write() {
    std::string out = "# infermesh budget state: owner window id microunits\n";
    {
      std::lock_guard lock(mu);
      for (const auto& [owner, e] : entries)
        for (int w = 0; w < 3; ++w) {
          const auto v = e->local[w].load(std::memory_order_relaxed);
          if (v != 0)
            out += owner + " " + kWindowNames[w] + " " + std::to_string(e->window[w].load()) + " " +
                   std::to_string(v) + "\n";
        }
    }
    std::lock_guard file_lock(file_mu);  // the flusher and the exit flush
    const std::string tmp = path + ".tmp";
    {
      std::ofstream f(tmp, std::ios::trunc);
      f << out;
      if (!f.flush()) {
        spdlog::warn("budget state: cannot write {}", tmp);
        return;
      }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) spdlog::warn("budget state: cannot replace {}", path);
  }

  void run() {
    std::unique_lock lock(mu);
    for (;;) {
      cv.wait_for(lock, kFlushEvery);
      if (!dirty.exchange(false)) continue;
      lock.unlock();
      write();
      lock.lock();
    }
  }
};

BudgetLedger::BudgetLedger() : impl_(std::make_unique<Impl>()) {}

BudgetLedger& BudgetLedger::instance() {
  static BudgetLedger* ledger = new BudgetLedger();  // its flusher runs until the process exits
  return *ledger;
}

std::array<std::int64_t, 3> BudgetLedger::windowIds(std::chrono::system_clock::time_point t) {
  const std::time_t s = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&s, &tm);
  return {static_cast<std::int64_t>(s / 3600), static_cast<std::int64_t>(s / 86400),
          static_cast<std::int64_t>(tm.tm_year + 1900) * 12 + tm.tm_mon};
}

std::chrono::system_clock::time_point BudgetLedger::windowEnd(Window w, std::chrono::system_clock::time_point t) {
  const std::time_t s = std::chrono::system_clock::to_time_t(t);
  if (w == kHour) return std::chrono::system_clock::from_time_t((s / 3600 + 1) * 3600);
  if (w == kDay) return std::chrono::system_clock::from_time_t((s / 86400 + 1) * 86400);
  std::tm tm{};
  gmtime_r(&s, &tm);
  tm.tm_mday = 1;
  tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
  if (++tm.tm_mon == 12) {
    tm.tm_mon = 0;
    ++tm.tm_year;
  }
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

bool BudgetLedger::useStateFile(const std::string& path, std::string& error) {
  std::unique_lock lock(impl_->mu);
  if (path.empty() || path == impl_->path) return true;
  if (!impl_->path.empty()) {
    error = "stateFile is already " + impl_->path + "; one proxy keeps one budget state file";
    return false;
  }
  std::ifstream f(path);
  const auto ids = windowIds(std::chrono::system_clock::now());
  std::string line;
  int n = 0;
  while (f && std::getline(f, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string owner, window;
    std::int64_t id = 0;
    config::Micros v = 0;
    if (!(in >> owner >> window >> id >> v)) {
      error = path + ":" + std::to_string(n) + ": not \"owner window id amount\"";
      return false;
    }
    int w = window == "hour" ? 0 : window == "day" ? 1 : window == "month" ? 2 : -1;
    if (w < 0) {
      error = path + ":" + std::to_string(n) + ": unknown window \"" + window + "\"";
      return false;
    }
    if (id != ids[w]) continue;  // a window that is over
    auto& e = impl_->entries[owner];
    if (!e) e = std::make_unique<Entry>();
    e->window[w].store(id);
    e->local[w].store(v);
  }
  impl_->path = path;
  impl_->flusher = std::thread([this] { impl_->run(); });
  impl_->flusher.detach();
  std::atexit([] { BudgetLedger::instance().flushNow(); });  // what the last 200 ms added
  return true;
}

BudgetLedger::Spent BudgetLedger::spent(std::string_view owner, const std::shared_ptr<RedisStore>& store) {
  Entry& e = impl_->entry(owner);
  const auto now = std::chrono::system_clock::now();
  const auto ids = windowIds(now);
  roll(e, ids);
  Spent s{};
  for (int w = 0; w < 3; ++w) s[w] = e.local[w].load(std::memory_order_relaxed);
  if (!store) return s;
  // The fleet's totals as last seen; refreshed in the background.
  const std::int64_t ms = steadyMs();
  std::int64_t last = e.refreshed_at.load(std::memory_order_relaxed);
  if (ms - last >= 1000 && e.refreshed_at.compare_exchange_strong(last, ms)) {
    for (int w = 0; w < 3; ++w) {
      const std::int64_t id = ids[w];
      store->get("budget|" + std::string(owner) + "|" + kWindowNames[w] + "|" + std::to_string(id),
                 [&e, w, id](std::optional<std::int64_t> total) {
                   if (total && e.window[w].load() == id) e.fleet[w].store(*total, std::memory_order_relaxed);
                 });
    }
  }
  for (int w = 0; w < 3; ++w) s[w] = std::max(s[w], e.fleet[w].load(std::memory_order_relaxed));
  return s;
}

void BudgetLedger::add(std::string_view owner, config::Micros cost, const std::shared_ptr<RedisStore>& store) {
  if (cost <= 0) return;
  Entry& e = impl_->entry(owner);
  const auto now = std::chrono::system_clock::now();
  const auto ids = windowIds(now);
  roll(e, ids);
  for (int w = 0; w < 3; ++w) e.local[w].fetch_add(cost, std::memory_order_relaxed);
  if (!store) {
    impl_->dirty.store(true, std::memory_order_relaxed);
    return;
  }
  for (int w = 0; w < 3; ++w) {
    const std::int64_t id = ids[w];
    e.fleet[w].fetch_add(cost, std::memory_order_relaxed);  // until Redis answers with the total
    store->add("budget|" + std::string(owner) + "|" + kWindowNames[w] + "|" + std::to_string(id), cost,
               windowEnd(static_cast<Window>(w), now), [&e, w, id](std::optional<std::int64_t> total) {
                 if (total && e.window[w].load() == id) e.fleet[w].store(*total, std::memory_order_relaxed);
               });
  }
}

void BudgetLedger::flushNow() {
  if (!impl_->path.empty()) impl_->write();
}

}  // namespace infermesh::ratelimit
