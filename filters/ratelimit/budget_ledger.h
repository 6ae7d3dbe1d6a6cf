#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/config/rate_limits.h"

namespace infermesh::ratelimit {

class RedisStore;

// What each budget owner (a tenant, or "tenant/key" for budgets per API
// key) spent in the current UTC hour, day and month, in microunits.
// Local budgets live here and in a state file, written in the background
// (at most kFlushEvery after a change) and read at start, so a restart
// does not reset them. Global budgets are Redis counters (INCRBY per
// window); this keeps the fleet's totals as last seen, refreshed by every
// add and at most once a second when read, so admission never waits.
class BudgetLedger {
 public:
  enum Window : std::uint8_t { kHour, kDay, kMonth };
  static constexpr std::chrono::milliseconds kFlushEvery{200};
  static constexpr const char* kWindowNames[3] = {"hour", "day", "month"};

  static BudgetLedger& instance();
  // The state file for local budgets (empty: memory only). Loaded the first
  // time a path is given; later calls with the same path do nothing.
  bool useStateFile(const std::string& path, std::string& error);

  using Spent = std::array<config::Micros, 3>;
  Spent spent(std::string_view owner, const std::shared_ptr<RedisStore>& store);
  void add(std::string_view owner, config::Micros cost, const std::shared_ptr<RedisStore>& store);
  // Window ids of `t`: hours and days since the epoch, months since year 0.
  static std::array<std::int64_t, 3> windowIds(std::chrono::system_clock::time_point t);
  static std::chrono::system_clock::time_point windowEnd(Window w, std::chrono::system_clock::time_point t);
  void flushNow();

  BudgetLedger(const BudgetLedger&) = delete;
  BudgetLedger& operator=(const BudgetLedger&) = delete;

 private:
  BudgetLedger();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace infermesh::ratelimit
