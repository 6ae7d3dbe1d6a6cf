#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>

namespace infermesh::ratelimit {

// A lock-free token bucket in the GCRA form (the generic cell rate
// algorithm): `capacity` units per `window`, refilled evenly, as one
// atomic "theoretical arrival time" (TAT). The bucket is full when
// TAT <= now; each unit taken moves TAT on by window/capacity; a take
// fits while TAT - now stays within the window. Redis runs the same
// arithmetic for global limits (redis_store.cc), so local and fleet
// counters agree on what a limit means.
//
// Times are microseconds on the steady clock, as doubles: exact enough
// for any interval above a nanosecond over years of uptime.
class GcraBucket {
 public:
  using Micros = double;

  GcraBucket(std::int64_t capacity, std::chrono::milliseconds window)
      : capacity_(capacity),
        window_(static_cast<double>(window.count()) * 1000.0),
        interval_(window_ / static_cast<double>(std::max<std::int64_t>(capacity, 1))) {}

  struct Take {
    std::int64_t granted = 0;
    std::int64_t remaining = 0;  // after the take
    Micros retry_after = 0;      // until what was asked would fit (0 when granted)
    Micros reset_after = 0;      // until the bucket is full again
  };

  static Micros now() {
    return static_cast<Micros>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count()) /
           1000.0;
  }

  // Takes `n` units, all or nothing (`partial`: as many as there are).
  Take take(std::int64_t n, Micros now, bool partial = false) {
    double tat = tat_.load(std::memory_order_relaxed);
    for (;;) {
      const double base = std::max(tat, now);
      const std::int64_t avail = available(base, now);
      const std::int64_t grant = n <= avail ? n : (partial ? avail : 0);
      Take t;
      t.granted = grant;
      t.remaining = avail - grant;
      const double next = base + static_cast<double>(grant) * interval_;
      t.reset_after = next - now;
      if (grant < n) t.retry_after = std::max(0.0, base + static_cast<double>(n) * interval_ - (now + window_));
      if (grant == 0) return t;
      if (tat_.compare_exchange_weak(tat, next, std::memory_order_relaxed)) return t;
    }
  }

  // Takes `n` units whatever is left: what was spent already and must be
  // counted (the bucket may go into debt, refusing until it refills).
  void charge(std::int64_t n, Micros now) {
    if (n <= 0) return;
    double tat = tat_.load(std::memory_order_relaxed);
    while (!tat_.compare_exchange_weak(tat, std::max(tat, now) + static_cast<double>(n) * interval_,
                                       std::memory_order_relaxed)) {
    }
  }

  // Returns `n` unused units (never above capacity).
  void give(std::int64_t n, Micros now) {
    if (n <= 0) return;
    double tat = tat_.load(std::memory_order_relaxed);
    while (!tat_.compare_exchange_weak(tat, std::max(tat - static_cast<double>(n) * interval_, now),
                                       std::memory_order_relaxed)) {
    }
  }

  std::int64_t remaining(Micros now) const { return available(std::max(tat_.load(std::memory_order_relaxed), now), now); }
  Micros resetAfter(Micros now) const { return std::max(0.0, tat_.load(std::memory_order_relaxed) - now); }
  std::int64_t capacity() const { return capacity_; }

 private:
  std::int64_t available(double base, Micros now) const {
    const double room = now + window_ - base;
    if (room <= 0) return 0;
    return std::min<std::int64_t>(capacity_, static_cast<std::int64_t>(std::floor(room / interval_ + 1e-9)));
  }

  const std::int64_t capacity_;
  const double window_;
  const double interval_;
  std::atomic<double> tat_{0};
};

}  // namespace infermesh::ratelimit
