#include "filters/ratelimit/counters.h"

#include <gtest/gtest.h>

#include <atomic>

#include "proxy/ratelimit/redis_store.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace infermesh::ratelimit {
namespace {

using testing::eventually;

std::shared_ptr<RedisStore> storeOn(const testing::RedisServer& redis, const std::string& prefix) {
  RedisOptions o;
  o.port = static_cast<std::uint16_t>(redis.port());
  o.key_prefix = prefix;
  return std::make_shared<RedisStore>(o);
}

config::LimitWindow tokensPerMinute(std::int64_t n) { return {true, std::chrono::minutes(1), n}; }
// Refills too slowly to matter while a test runs.
config::LimitWindow tokensPerHour(std::int64_t n) { return {true, std::chrono::hours(1), n}; }

// Fetches a block and waits for it.
void fill(Lease& lease, std::int64_t want) {
  std::atomic<bool> done{false};
  lease.whenFetched(want, [&] { done = true; });
  ASSERT_TRUE(eventually([&] { return done.load(); }));
}

TEST(LeaseTest, SpendsLocallyFromLeasedBlocks) {
  testing::RedisServer redis;
  auto store = storeOn(redis, "lease-a:");
  Lease lease(store, "k", tokensPerMinute(1000), 100);
  EXPECT_EQ(lease.take(10), Lease::Result::NeedFetch);  // nothing leased yet
  fill(lease, 10);
  EXPECT_EQ(lease.held(), 100);
  EXPECT_EQ(lease.fleetRemaining(), 900);
  EXPECT_EQ(lease.take(40), Lease::Result::Granted);
  EXPECT_EQ(lease.held(), 60);
  // Below half a block, the next one is fetched in the background.
  EXPECT_EQ(lease.take(20), Lease::Result::Granted);
  EXPECT_TRUE(eventually([&] { return lease.held() == 140; }));
  EXPECT_EQ(lease.fleetRemaining(), 800);
}

TEST(LeaseTest, TwoProxiesShareOneWindowAndDebtIsBoundedByABlock) {
  testing::RedisServer redis;
  auto store_a = storeOn(redis, "lease-b:");
  auto store_b = storeOn(redis, "lease-b:");
  Lease a(store_a, "k", tokensPerHour(300), 100);
  Lease b(store_b, "k", tokensPerHour(300), 100);
  fill(a, 100);
  fill(b, 100);
  fill(a, 100);
  EXPECT_EQ(a.held() + b.held(), 300);
  EXPECT_EQ(a.fleetRemaining(), 0);  // the fleet's window is spent
  // Spending already generated tokens goes at most one block into debt.
  EXPECT_TRUE(b.charge(100));
  EXPECT_TRUE(b.charge(100));
  std::atomic<bool> fetched{false};
  b.whenFetched(1, [&] { fetched = true; });  // the refill it asked for comes back empty
  ASSERT_TRUE(eventually([&] { return fetched.load(); }));
  EXPECT_EQ(b.held(), -100);
  EXPECT_FALSE(b.charge(1));
  EXPECT_NE(b.take(1), Lease::Result::Granted);
}

TEST(LeaseTest, GivesSurplusBackToTheFleet) {
  testing::RedisServer redis;
  auto store = storeOn(redis, "lease-c:");
  Lease lease(store, "k", tokensPerHour(1000), 100);
  fill(lease, 100);
  // Two reservations of 100, each followed by the refill it triggers.
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(lease.take(100), Lease::Result::Granted);
    EXPECT_TRUE(eventually([&] { return lease.held() == 100; }));
  }
  EXPECT_EQ(lease.fleetRemaining(), 700);
  // Both settle to nothing: more than two blocks idle go back to Redis.
  lease.give(200);
  EXPECT_EQ(lease.held(), 100);
  Lease other(storeOn(redis, "lease-c:"), "k", tokensPerHour(1000), 1000);
  fill(other, 1000);
  EXPECT_EQ(other.held(), 900);  // without the give: 700
}

TEST(LeaseTest, StoreDownIsReportedAndRecovers) {
  testing::RedisServer redis;
  auto store = storeOn(redis, "lease-d:");
  Lease lease(store, "k", tokensPerMinute(1000), 100);
  redis.stop();
  fill(lease, 10);
  EXPECT_TRUE(lease.storeDown());
  EXPECT_EQ(lease.take(10), Lease::Result::StoreDown);
  redis.restart();
  ASSERT_TRUE(eventually([&] { return store->connected(); }, std::chrono::seconds(10)));
  // A take while down retries; once Redis answers the lease works again.
  EXPECT_TRUE(eventually([&] { return lease.take(10) == Lease::Result::Granted; }, std::chrono::seconds(5)));
  EXPECT_FALSE(lease.storeDown());
}

TEST(CounterTableTest, OneCounterPerKeyAndWindowKind) {
  config::RateLimitConfig limit;
  limit.name = "Tenant/t/tpm";
  limit.signature = "Tenant/t/tpm|test";
  limit.windows = {{false, std::chrono::seconds(1), 5}, tokensPerMinute(100)};
  auto& table = CounterTable::instance();
  Counter& a = table.find(limit, "key-a", nullptr);
  Counter& again = table.find(limit, "key-a", nullptr);
  Counter& b = table.find(limit, "key-b", nullptr);
  EXPECT_EQ(&a, &again);
  EXPECT_NE(&a, &b);
  ASSERT_EQ(a.buckets.size(), 2u);  // local: a bucket per window
  EXPECT_EQ(a.buckets[0]->capacity(), 5);
  EXPECT_EQ(a.buckets[1]->capacity(), 100);
}

TEST(ObservedOutputTest, HighPercentileAfterEnoughSamples) {
  auto& o = ObservedOutput::instance();
  static int run = 0;  // the table is the process's: a fresh tenant per run
  const std::string t = "t" + std::to_string(++run);
  for (int i = 0; i < 19; ++i) o.record(t, "m", 100);
  EXPECT_EQ(o.p95(t, "m"), 0);  // too few to say
  for (int i = 0; i < 81; ++i) o.record(t, "m", 100);
  const auto p = o.p95(t, "m");
  EXPECT_GE(p, 100);
  EXPECT_LE(p, 256);  // the upper edge of its log-scale bucket
  for (int i = 0; i < 10; ++i) o.record(t, "m", 3000);  // the tail moves it
  EXPECT_GE(o.p95(t, "m"), 3000);
  EXPECT_EQ(o.p95(t, "other"), 0);
}

}  // namespace
}  // namespace infermesh::ratelimit
