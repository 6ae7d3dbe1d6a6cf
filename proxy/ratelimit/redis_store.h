#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace infermesh::ratelimit {

struct RedisOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  std::string password;  // empty: no AUTH
  int db = 0;            // SELECT when not 0
  std::string key_prefix = "infermesh:";
  std::chrono::milliseconds connect_timeout{200}, command_timeout{200};
  std::chrono::milliseconds reconnect_min{50}, reconnect_max{2000};
  // Calls waiting for Redis; past it a call fails at once (ok=false / nullopt).
  std::size_t max_queue = 10000;
  // A counter of add() lives this long past its window_end.
  std::chrono::milliseconds counter_expiry_margin{60000};
  // While idle and connected, a PING this often notices a lost server
  // (so connected() is current). Zero: only calls notice.
  std::chrono::milliseconds health_interval{1000};
};

struct TakeResult {
  bool ok = false;            // false: store unreachable / error (caller applies its fail mode)
  std::int64_t granted = 0;   // what the store granted now (0..want)
  std::int64_t remaining = 0; // what is left in the fleet window after this grant
  std::chrono::microseconds retry_after{0};  // when granted < want: time until `want` would fit
  std::chrono::microseconds reset_after{0};  // time until the window is fully replenished
};

// The fleet-wide store behind global limits and budgets (docs/redis.md).
// Every call returns at once; its callback runs later on the store's own
// thread (a caller posts back to its worker from there), never inside the
// call. Callbacks must be quick and must not throw (an exception is
// swallowed). While Redis is unreachable calls fail fast.
class RedisStore {
 public:
  explicit RedisStore(RedisOptions options);
  // Stops the thread; pending callbacks get ok=false / nullopt, none is lost.
  ~RedisStore();
  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;

  // GCRA over `capacity` units per `window`, atomically in Redis (one Lua
  // script, EVALSHA with NOSCRIPT reload, time from Redis TIME). Grants
  // min(want, available). want 0 only reads the window. retry_after is
  // computed as if the grant stands. ok=false for capacity < 1, window <
  // 1 us or want < 0.
  void take(std::string key, std::int64_t want, std::int64_t capacity, std::chrono::milliseconds window,
            std::function<void(const TakeResult&)> done);
  // Return unused units (never beyond a full bucket). Fire and forget.
  void give(std::string key, std::int64_t amount, std::int64_t capacity, std::chrono::milliseconds window);
  // INCRBY on a counter that expires at window_end + counter_expiry_margin
  // (MULTI/EXEC, so the counter never lives without its expiry); done(new
  // total) or nullopt on error.
  void add(std::string key, std::int64_t amount, std::chrono::system_clock::time_point window_end,
           std::function<void(std::optional<std::int64_t>)> done);
  // nullopt: error (also a value that is not an integer); 0 if absent.
  void get(std::string key, std::function<void(std::optional<std::int64_t>)> done);
  bool connected() const;

  // For metrics. commandsSent: calls written to Redis (a NOSCRIPT retry
  // counts again). errors: calls that failed at Redis (error or malformed
  // reply, I/O error, timeout) and failed connection attempts. rejected:
  // calls failed without trying (disconnected, queue full, bad arguments,
  // stopping). reconnects: connections made after the first one.
  // scriptReloads: NOSCRIPT replies answered by sending the script again.
  std::uint64_t commandsSent() const;
  std::uint64_t errors() const;
  std::uint64_t rejected() const;
  std::uint64_t reconnects() const;
  std::uint64_t scriptReloads() const;
  // The last connection or reply error, for logs ("" when none yet).
  std::string lastError() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace infermesh::ratelimit
