#include "proxy/ratelimit/gcra.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace infermesh::ratelimit {
namespace {

constexpr double kSecond = 1e6;

TEST(GcraBucketTest, StartsFullAndRefusesPastCapacity) {
  GcraBucket b(10, std::chrono::seconds(1));
  const double t0 = 1000 * kSecond;
  EXPECT_EQ(b.remaining(t0), 10);
  auto t = b.take(7, t0);
  EXPECT_EQ(t.granted, 7);
  EXPECT_EQ(t.remaining, 3);
  t = b.take(4, t0);  // all or nothing
  EXPECT_EQ(t.granted, 0);
  EXPECT_EQ(t.remaining, 3);
  // One more unit refills every 100 ms.
  EXPECT_NEAR(t.retry_after, 0.1 * kSecond, 1);
  EXPECT_NEAR(t.reset_after, 0.7 * kSecond, 1);
  t = b.take(4, t0, /*partial=*/true);
  EXPECT_EQ(t.granted, 3);
  EXPECT_EQ(t.remaining, 0);
}

TEST(GcraBucketTest, RefillsEvenlyOverTheWindow) {
  GcraBucket b(60, std::chrono::minutes(1));
  const double t0 = 50 * kSecond;
  EXPECT_EQ(b.take(60, t0).granted, 60);
  EXPECT_EQ(b.remaining(t0 + 0.5 * kSecond), 0);
  EXPECT_EQ(b.remaining(t0 + 10 * kSecond), 10);
  EXPECT_EQ(b.remaining(t0 + 60 * kSecond), 60);
  EXPECT_EQ(b.remaining(t0 + 600 * kSecond), 60);  // never above capacity
}

TEST(GcraBucketTest, ChargeGoesIntoDebtAndGiveReturns) {
  GcraBucket b(100, std::chrono::seconds(10));
  const double t0 = 5 * kSecond;
  b.charge(150, t0);  // spent already: counted whatever is left
  EXPECT_EQ(b.remaining(t0), 0);
  EXPECT_EQ(b.take(1, t0).granted, 0);
  // 150 units at 0.1 s each: full again after 15 s, the first unit after 5.1 s.
  EXPECT_EQ(b.remaining(t0 + 5 * kSecond), 0);
  EXPECT_EQ(b.remaining(t0 + 6 * kSecond), 10);
  b.give(200, t0 + 6 * kSecond);
  EXPECT_EQ(b.remaining(t0 + 6 * kSecond), 100);
}

TEST(GcraBucketTest, ConcurrentTakesNeverExceedCapacity) {
  GcraBucket b(10000, std::chrono::hours(1));  // no refill to speak of
  const double t0 = GcraBucket::now();
  std::atomic<std::int64_t> granted{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      for (int j = 0; j < 5000; ++j) granted += b.take(3, t0).granted;
    });
  for (auto& t : threads) t.join();
  EXPECT_LE(granted.load(), 10000);
  EXPECT_GE(granted.load(), 10000 - 3);
}

}  // namespace
}  // namespace infermesh::ratelimit
