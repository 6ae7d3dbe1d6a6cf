#include "proxy/ratelimit/redis_store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <future>
#include <memory>
#include <thread>
#include <vector>

#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace infermesh::ratelimit {
namespace {

using namespace std::chrono_literals;
using infermesh::testing::eventually;
using infermesh::testing::RedisServer;
using Clock = std::chrono::steady_clock;

RedisOptions optionsFor(const RedisServer& server) {
  RedisOptions o;
  o.port = static_cast<std::uint16_t>(server.port());
  o.password = server.password();
  o.key_prefix = "test:";
  return o;
}

// The callback's result, waited for with a bound (nullopt: no callback).
std::optional<TakeResult> takeNow(RedisStore& store, const std::string& key, std::int64_t want,
                                  std::int64_t capacity, std::chrono::milliseconds window) {
  auto p = std::make_shared<std::promise<TakeResult>>();
  auto f = p->get_future();
  store.take(key, want, capacity, window, [p](const TakeResult& r) { p->set_value(r); });
  if (f.wait_for(5s) != std::future_status::ready) return std::nullopt;
  return f.get();
}

// For add/get: outer nullopt when no callback came, inner is the result.
using Value = std::optional<std::optional<std::int64_t>>;
const Value kError{std::in_place, std::nullopt};  // a callback with nullopt

Value valueOf(const std::function<void(std::function<void(std::optional<std::int64_t>)>)>& call) {
  auto p = std::make_shared<std::promise<std::optional<std::int64_t>>>();
  auto f = p->get_future();
  call([p](std::optional<std::int64_t> v) { p->set_value(v); });
  if (f.wait_for(5s) != std::future_status::ready) return std::nullopt;
  return f.get();
}

Value getNow(RedisStore& store, const std::string& key) {
  return valueOf([&](auto done) { store.get(key, std::move(done)); });
}

Value addNow(RedisStore& store, const std::string& key, std::int64_t amount,
             std::chrono::system_clock::time_point end) {
  return valueOf([&](auto done) { store.add(key, amount, end, std::move(done)); });
}

bool waitConnected(const RedisStore& store) {
  return eventually([&] { return store.connected(); }, 5s, 5ms);
}

TEST(RedisStoreTest, TakeGrantsUpToCapacityThenPartialThenZero) {
  RedisServer server;
  RedisStore store(optionsFor(server));
  // 10 units per 10 s: one unit every second.
  auto r = takeNow(store, "k", 4, 10, 10s);
  ASSERT_TRUE(r && r->ok);
  EXPECT_EQ(r->granted, 4);
  EXPECT_EQ(r->remaining, 6);
  EXPECT_EQ(r->retry_after, 0us);
  EXPECT_GT(r->reset_after, 3900ms);
  EXPECT_LE(r->reset_after, 4s);

  r = takeNow(store, "k", 4, 10, 10s);
  ASSERT_TRUE(r && r->ok);
  EXPECT_EQ(r->granted, 4);
  EXPECT_EQ(r->remaining, 2);

  // Partial: what is left, and `want` (4) fits again in about 4 s.
  r = takeNow(store, "k", 4, 10, 10s);
  ASSERT_TRUE(r && r->ok);
  EXPECT_EQ(r->granted, 2);
  EXPECT_EQ(r->remaining, 0);
  EXPECT_GT(r->retry_after, 3500ms);
  EXPECT_LE(r->retry_after, 4s);
  EXPECT_GT(r->reset_after, 9500ms);
  EXPECT_LE(r->reset_after, 10s);

  r = takeNow(store, "k", 1, 10, 10s);
  ASSERT_TRUE(r && r->ok);
  EXPECT_EQ(r->granted, 0);
  EXPECT_GT(r->retry_after, 500ms);
  EXPECT_LE(r->retry_after, 1s);

  // More than the capacity never fits whole: retry when the window is full.
  r = takeNow(store, "k", 25, 10, 10s);
  ASSERT_TRUE(r && r->ok);
  EXPECT_EQ(r->granted, 0);
  EXPECT_EQ(r->retry_after, r->reset_after);

  // want 0 reads; another key has its own window.
  r = takeNow(store, "k", 0, 10, 10s);
  ASSERT_TRUE(r && r->ok);
  EXPECT_EQ(r->granted, 0);
  r = takeNow(store, "other", 10, 10, 10s);
  ASSERT_TRUE(r && r->ok);
  EXPECT_EQ(r->granted, 10);

  // Keys carry the prefix and expire with the window.
  const long pttl = std::atol(server.command({"PTTL", "test:k"}).c_str());
  EXPECT_GT(pttl, 9000);
  EXPECT_LE(pttl, 10000);

  // Unusable arguments fail without a round trip.
  r = takeNow(store, "k", 1, 0, 10s);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->ok);
  r = takeNow(store, "k", -1, 10, 10s);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->ok);
}

TEST(RedisStoreTest, GiveReturnsUnitsButNeverBeyondAFullBucket) {
  RedisServer server;
  RedisStore store(optionsFor(server));
  auto r = takeNow(store, "g", 10, 10, 100s);
  ASSERT_TRUE(r && r->ok);
  EXPECT_EQ(r->granted, 10);
  store.give("g", 3, 10, 100s);
  r = takeNow(store, "g", 5, 10, 100s);  // calls run in order
  ASSERT_TRUE(r && r->ok);
  EXPECT_EQ(r->granted, 3);

  store.give("g", 1000, 10, 100s);
  r = takeNow(store, "g", 0, 10, 100s);
  ASSERT_TRUE(r && r->ok);
  EXPECT_EQ(r->remaining, 10);
  EXPECT_EQ(r->reset_after, 0us);
  r = takeNow(store, "g", 20, 10, 100s);
  ASSERT_TRUE(r && r->ok);
  EXPECT_EQ(r->granted, 10);
}

TEST(RedisStoreTest, TwoProxiesShareOneWindow) {
  RedisServer server;
  RedisStore a(optionsFor(server));
  RedisStore b(optionsFor(server));
  ASSERT_TRUE(waitConnected(a));
  ASSERT_TRUE(waitConnected(b));
  constexpr std::int64_t kCapacity = 1000;
  constexpr std::chrono::milliseconds kWindow = 10s;  // one unit per 10 ms
  constexpr int kCallsPerThread = 300;
  std::atomic<std::int64_t> granted{0};
  std::atomic<int> answered{0}, failed{0};
  auto done = [&](const TakeResult& r) {
    if (!r.ok) failed.fetch_add(1);
    granted.fetch_add(r.granted);
    answered.fetch_add(1);
  };
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (RedisStore* s : {&a, &b, &a, &b})
    threads.emplace_back([s, &done, kWindow] {
      for (int i = 0; i < kCallsPerThread; ++i) s->take("shared", 3, kCapacity, kWindow, done);
    });
  for (auto& t : threads) t.join();
  ASSERT_TRUE(eventually([&] { return answered.load() == 4 * kCallsPerThread; }, 10s, 5ms));
  const auto elapsed = Clock::now() - start;
  EXPECT_EQ(failed.load(), 0);
  // 3600 wanted: the whole window goes, and no more than refilled meanwhile.
  const auto refilled = std::chrono::duration_cast<std::chrono::milliseconds>(elapsed).count() / 10 + 1;
  EXPECT_GE(granted.load(), kCapacity);
  EXPECT_LE(granted.load(), kCapacity + refilled);
}

TEST(RedisStoreTest, AddAndGetCountersWithExpiry) {
  RedisServer server;
  RedisOptions o = optionsFor(server);
  o.counter_expiry_margin = 0ms;
  RedisStore store(o);
  const auto end = std::chrono::system_clock::now() + 60s;
  EXPECT_EQ(addNow(store, "budget", 5, end), Value(5));
  EXPECT_EQ(addNow(store, "budget", 7, end), Value(12));
  EXPECT_EQ(addNow(store, "budget", -2, end), Value(10));
  EXPECT_EQ(getNow(store, "budget"), Value(10));
  EXPECT_EQ(getNow(store, "absent"), Value(0));
  long pttl = std::atol(server.command({"PTTL", "test:budget"}).c_str());
  EXPECT_GT(pttl, 58000);
  EXPECT_LE(pttl, 60000);

  // The margin keeps a counter past its window's end.
  RedisStore with_margin(optionsFor(server));
  EXPECT_EQ(addNow(with_margin, "budget2", 1, end), Value(1));
  pttl = std::atol(server.command({"PTTL", "test:budget2"}).c_str());
  EXPECT_GT(pttl, 118000);
  EXPECT_LE(pttl, 120000);

  EXPECT_EQ(addNow(store, "short", 1, std::chrono::system_clock::now() + 200ms), Value(1));
  EXPECT_TRUE(eventually([&] { return getNow(store, "short") == Value(0); }, 5s));
}

TEST(RedisStoreTest, SelectsTheConfiguredDatabase) {
  RedisServer server;
  RedisOptions o = optionsFor(server);
  o.db = 3;
  RedisStore db3(o);
  RedisStore db0(optionsFor(server));
  EXPECT_EQ(addNow(db3, "c", 4, std::chrono::system_clock::now() + 60s), Value(4));
  EXPECT_EQ(getNow(db3, "c"), Value(4));
  EXPECT_EQ(getNow(db0, "c"), Value(0));
  EXPECT_EQ(server.command({"GET", "test:c"}), "(nil)");
}

TEST(RedisStoreTest, WrongTypesAndErrorRepliesFailTheCallOnly) {
  RedisServer server;
  RedisStore store(optionsFor(server));
  ASSERT_EQ(server.command({"SET", "test:text", "abc"}), "OK");
  ASSERT_EQ(server.command({"LPUSH", "test:list", "x"}), "1");
  EXPECT_EQ(getNow(store, "text"), kError);
  EXPECT_EQ(addNow(store, "text", 1, std::chrono::system_clock::now() + 60s), kError);
  EXPECT_EQ(getNow(store, "list"), kError);
  auto r = takeNow(store, "list", 1, 10, 10s);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->ok);
  EXPECT_NE(store.lastError(), "");
  EXPECT_GE(store.errors(), 4u);
  // A TAT that is not a number counts as a full bucket and is replaced.
  ASSERT_EQ(server.command({"SET", "test:junk", "abc"}), "OK");
  r = takeNow(store, "junk", 1, 10, 10s);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ok);
  EXPECT_EQ(r->granted, 1);
  EXPECT_NE(server.command({"GET", "test:junk"}), "abc");
  // The connection is fine.
  EXPECT_TRUE(store.connected());
  r = takeNow(store, "fine", 1, 10, 10s);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ok);
}

TEST(RedisStoreTest, PasswordIsSentAndAWrongOneFails) {
  RedisServer server("s3cret-pass");
  RedisStore store(optionsFor(server));
  auto r = takeNow(store, "p", 1, 10, 10s);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->ok);

  RedisOptions wrong = optionsFor(server);
  wrong.password = "nope";
  RedisStore bad(wrong);
  r = takeNow(bad, "p", 1, 10, 10s);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->ok);
  EXPECT_FALSE(bad.connected());
  EXPECT_NE(bad.lastError().find("AUTH"), std::string::npos) << bad.lastError();

  RedisOptions none = optionsFor(server);
  none.password.clear();
  RedisStore anonymous(none);
  EXPECT_EQ(getNow(anonymous, "p"), kError);
  EXPECT_FALSE(anonymous.connected());
}

TEST(RedisStoreTest, UnreachableRedisFailsFast) {
  int port;
  {
    RedisServer gone;  // a port where nothing listens once it is gone
    port = gone.port();
  }
  RedisOptions o;
  o.port = static_cast<std::uint16_t>(port);
  RedisStore store(o);
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    auto r = takeNow(store, "u", 1, 10, 10s);
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->ok);
    EXPECT_LT(Clock::now() - t0, 1s);
    EXPECT_EQ(getNow(store, "u"), kError);
  }
  EXPECT_FALSE(store.connected());
  EXPECT_GE(store.errors(), 1u);
  EXPECT_GE(store.rejected(), 1u);
}

TEST(RedisStoreTest, KilledServerFailsFastThenTheStoreReconnectsAndReloadsTheScript) {
  RedisServer server;
  RedisStore store(optionsFor(server));
  auto r = takeNow(store, "crash", 1, 10, 10s);
  ASSERT_TRUE(r && r->ok);
  ASSERT_TRUE(store.connected());

  server.stop();
  // Every call comes back quickly, failed, and the store knows it is down.
  const bool down = eventually(
      [&] {
        const auto t0 = Clock::now();
        auto res = takeNow(store, "crash", 1, 10, 10s);
        EXPECT_TRUE(res.has_value());
        EXPECT_LT(Clock::now() - t0, 1s);
        return res && !res->ok && !store.connected();
      },
      3s, 5ms);
  ASSERT_TRUE(down);
  for (int i = 0; i < 20; ++i) {
    const auto t0 = Clock::now();
    r = takeNow(store, "crash", 1, 10, 10s);
    ASSERT_TRUE(r);
    EXPECT_FALSE(r->ok);
    EXPECT_LT(Clock::now() - t0, 1s);
  }

  server.restart();
  // The new server has no scripts: the first EVALSHA gets NOSCRIPT and the
  // store sends the script itself.
  EXPECT_TRUE(eventually(
      [&] {
        auto res = takeNow(store, "crash", 1, 10, 10s);
        return res && res->ok;
      },
      5s, 10ms));
  EXPECT_TRUE(store.connected());
  EXPECT_GE(store.reconnects(), 1u);
  EXPECT_EQ(store.scriptReloads(), 1u);
  r = takeNow(store, "crash", 1, 10, 10s);
  ASSERT_TRUE(r && r->ok);
  EXPECT_EQ(store.scriptReloads(), 1u);
}

TEST(RedisStoreTest, ScriptFlushIsAnsweredByReloadingTheScript) {
  RedisServer server;
  RedisStore store(optionsFor(server));
  auto r = takeNow(store, "f", 1, 10, 10s);
  ASSERT_TRUE(r && r->ok);
  ASSERT_EQ(server.command({"SCRIPT", "FLUSH"}), "OK");
  // A pipelined burst all gets NOSCRIPT; one reload answers all of them.
  std::atomic<int> ok{0}, answered{0};
  for (int i = 0; i < 50; ++i)
    store.take("f", 1, 100, 10s, [&](const TakeResult& res) {
      if (res.ok) ok.fetch_add(1);
      answered.fetch_add(1);
    });
  ASSERT_TRUE(eventually([&] { return answered.load() == 50; }, 5s, 5ms));
  EXPECT_EQ(ok.load(), 50);
  EXPECT_EQ(store.scriptReloads(), 1u);
}

TEST(RedisStoreTest, APausedServerTimesOutAndComesBack) {
  RedisServer server;
  RedisOptions o = optionsFor(server);
  o.command_timeout = 200ms;
  RedisStore store(o);
  auto r = takeNow(store, "z", 1, 10, 10s);
  ASSERT_TRUE(r && r->ok);
  server.pause();
  const auto t0 = Clock::now();
  r = takeNow(store, "z", 1, 10, 10s);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->ok);
  EXPECT_LT(Clock::now() - t0, 1s);
  EXPECT_NE(store.lastError(), "");
  server.resume();
  EXPECT_TRUE(eventually(
      [&] {
        auto res = takeNow(store, "z", 1, 10, 10s);
        return res && res->ok;
      },
      5s, 10ms));
}

TEST(RedisStoreTest, IdleHealthCheckNoticesALostServer) {
  RedisServer server;
  RedisOptions o = optionsFor(server);
  o.health_interval = 50ms;
  RedisStore store(o);
  ASSERT_TRUE(waitConnected(store));
  server.stop();
  EXPECT_TRUE(eventually([&] { return !store.connected(); }, 3s, 5ms));
  server.restart();
  EXPECT_TRUE(eventually([&] { return store.connected(); }, 5s, 5ms));
}

TEST(RedisStoreTest, AFullQueueFailsTheExcessAtOnce) {
  RedisServer server;
  RedisOptions o = optionsFor(server);
  o.max_queue = 10;
  RedisStore store(o);
  ASSERT_TRUE(waitConnected(store));
  // Hold the store's thread in a callback while calls pile up.
  std::promise<void> gate;
  auto opened = gate.get_future().share();
  std::atomic<bool> holding{false};
  store.get("x", [&, opened](std::optional<std::int64_t>) {
    holding = true;
    opened.wait_for(10s);
  });
  ASSERT_TRUE(eventually([&] { return holding.load(); }, 5s, 1ms));
  std::atomic<int> ok{0}, failed{0};
  for (int i = 0; i < 50; ++i)
    store.get("x", [&](std::optional<std::int64_t> v) { (v ? ok : failed).fetch_add(1); });
  EXPECT_EQ(store.rejected(), 40u);
  gate.set_value();
  ASSERT_TRUE(eventually([&] { return ok.load() + failed.load() == 50; }, 5s, 5ms));
  EXPECT_EQ(ok.load(), 10);
  EXPECT_EQ(failed.load(), 40);
}

TEST(RedisStoreTest, DestructorRunsEveryPendingCallback) {
  RedisServer server;
  std::atomic<int> answered{0};
  {
    RedisStore store(optionsFor(server));
    for (int i = 0; i < 3000; ++i) {
      store.take("d", 1, 1000000, 10s, [&](const TakeResult&) { answered.fetch_add(1); });
      store.get("d", [&](std::optional<std::int64_t>) { answered.fetch_add(1); });
    }
  }
  EXPECT_EQ(answered.load(), 6000);

  // Also while the store is down and in backoff.
  server.stop();
  answered = 0;
  {
    RedisOptions o = optionsFor(server);
    o.reconnect_min = 1000ms;
    RedisStore store(o);
    for (int i = 0; i < 100; ++i)
      store.add("d", 1, std::chrono::system_clock::now(), [&](std::optional<std::int64_t>) { answered.fetch_add(1); });
  }
  EXPECT_EQ(answered.load(), 100);
}

// Informational: take() from call to callback against a local Redis, one
// at a time and as a pipelined burst.
TEST(RedisStoreTest, TakeLatency) {
  RedisServer server;
  RedisStore store(optionsFor(server));
  ASSERT_TRUE(waitConnected(store));
  constexpr int kCalls = 5000;
  std::vector<double> us;
  us.reserve(kCalls);
  for (int i = 0; i < kCalls; ++i) {
    const auto t0 = Clock::now();
    auto r = takeNow(store, "lat", 1, 1000000000, 60s);
    ASSERT_TRUE(r && r->ok);
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  std::sort(us.begin(), us.end());
  std::atomic<int> answered{0};
  const auto t0 = Clock::now();
  for (int i = 0; i < kCalls; ++i)
    store.take("lat", 1, 1000000000, 60s, [&](const TakeResult&) { answered.fetch_add(1); });
  ASSERT_TRUE(eventually([&] { return answered.load() == kCalls; }, 20s, 1ms));
  const double burst_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::printf("take() one at a time: p50 %.0f us, p99 %.0f us; %d pipelined: %.1f ms\n", us[kCalls / 2],
              us[kCalls * 99 / 100], kCalls, burst_ms);
  RecordProperty("take_p50_us", static_cast<int>(us[kCalls / 2]));
  RecordProperty("take_p99_us", static_cast<int>(us[kCalls * 99 / 100]));
}

}  // namespace
}  // namespace infermesh::ratelimit
