#include "proxy/upstream/load_balancer.h"

#include <gtest/gtest.h>

#include <map>

namespace infermesh::upstream {
namespace {

config::ModelConfig model(std::vector<std::uint32_t> weights, config::LbPolicy policy) {
  config::ModelConfig m;
  m.name = "m";
  m.lb.policy = policy;
  for (std::size_t i = 0; i < weights.size(); ++i) {
    config::EndpointConfig e;
    e.address = "10.0.0." + std::to_string(i) + ":80";
    e.key = 1000 + i;
    e.weight = weights[i];
    m.total_weight += weights[i];
    m.endpoints.push_back(e);
  }
  return m;
}

struct Picker {
  const config::ModelConfig& m;
  EndpointStates& s;
  std::uint32_t rr = 0;
  std::mt19937_64 rng{42};
  Clock::time_point now = Clock::now();
  std::uint64_t hash = 0;
  const std::vector<std::string>* allowed = nullptr;
  const SelfLocality* self = nullptr;

  int pick(std::vector<bool> tried) {
    PickRequest req{tried, now, hash, allowed, nullptr, self};
    return pickEndpoint(m, s, rr, rng, req);
  }
  int pick() { return pick(std::vector<bool>(m.endpoints.size(), false)); }
  std::map<int, int> spread(int picks) {
    std::map<int, int> count;
    for (int i = 0; i < picks; ++i) ++count[pick()];
    return count;
  }
};

TEST(LoadBalancer, WeightedRoundRobin) {
  auto m = model({1, 3}, config::LbPolicy::RoundRobin);
  EndpointStates s;
  auto c = Picker{m, s}.spread(400);
  EXPECT_EQ(c[0], 100);
  EXPECT_EQ(c[1], 300);
}

TEST(LoadBalancer, LeastRequestPrefersTheLessLoaded) {
  auto m = model({1, 1, 1}, config::LbPolicy::LeastRequest);
  EndpointStates s;
  s.get(1000).outstanding = 10;
  s.get(1001).outstanding = 10;
  auto c = Picker{m, s}.spread(300);
  // Endpoint 2 wins every pair it is in (2 of 3 pairs).
  EXPECT_GT(c[2], 150);
  EXPECT_LT(c[0] + c[1], 150);
}

TEST(LoadBalancer, TriedAndUnavailableEndpointsAreSkipped) {
  auto m = model({1, 1}, config::LbPolicy::LeastRequest);
  EndpointStates s;
  Picker p{m, s};
  EXPECT_EQ(p.pick({true, false}), 1);
  EXPECT_EQ(p.pick({true, true}), -1);
  s.get(1001).ejected_until = p.now + std::chrono::seconds(5);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(p.pick(), 0);
  // Everything else tried: an ejected endpoint beats a certain 503.
  EXPECT_EQ(p.pick({true, false}), 1);
  // Resting after a 429 and failing health checks count as unavailable too.
  s.get(1001).ejected_until = {};
  s.get(1001).cooldown_until = p.now + std::chrono::seconds(5);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(p.pick(), 0);
  s.get(1001).cooldown_until = {};
  s.get(1000).active = ActiveHealth::Unhealthy;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(p.pick(), 1);
}

TEST(LoadBalancer, EwmaAvoidsTheSlowEndpoint) {
  auto m = model({1, 1}, config::LbPolicy::Ewma);
  EndpointStates s;
  Picker p{m, s};
  recordLatency(s.get(1000), 2.0, p.now);
  recordLatency(s.get(1001), 0.05, p.now);
  auto c = p.spread(100);
  EXPECT_EQ(c[1], 100);
  // Load counts too: with enough in flight the fast one costs more.
  s.get(1001).outstanding = 100;
  c = p.spread(100);
  EXPECT_EQ(c[0], 100);
  // Without samples the average decays, so the slow one is tried again.
  s.get(1001).outstanding = 0;
  EXPECT_LT(currentEwma(s.get(1000), p.now + std::chrono::seconds(60)), 0.1);
}

TEST(LoadBalancer, ConsistentHashIsStickyWithBoundedLoad) {
  auto m = model({1, 1, 1, 1}, config::LbPolicy::ConsistentHash);
  EndpointStates s;
  Picker p{m, s};
  std::map<int, int> homes;
  for (std::uint64_t key = 0; key < 400; ++key) {
    p.hash = hashKey("session-" + std::to_string(key));
    const int first = p.pick();
    EXPECT_EQ(p.pick(), first);  // same key, same endpoint
    ++homes[first];
  }
  for (int i = 0; i < 4; ++i) EXPECT_GT(homes[i], 50) << "keys spread over all endpoints";
  // An overloaded home sends its keys to the next choice, not to a random one.
  p.hash = hashKey("session-7");
  const int home = p.pick();
  s.get(1000 + static_cast<std::uint64_t>(home)).outstanding = 50;
  const int spill = p.pick();
  EXPECT_NE(spill, home);
  EXPECT_EQ(p.pick(), spill);
  // Removing another endpoint does not move keys whose home stays.
  s.get(1000 + static_cast<std::uint64_t>(home)).outstanding = 0;
  std::vector<bool> tried(4, false);
  tried[static_cast<std::size_t>((home + 1) % 4)] = true;
  EXPECT_EQ(p.pick(tried), home);
}

TEST(LoadBalancer, LoadAwareFollowsFreshReports) {
  auto m = model({1, 1}, config::LbPolicy::LoadAware);
  m.lb.load_report_half_life = std::chrono::milliseconds(1000);
  EndpointStates s;
  Picker p{m, s};
  double q = 0, kv = 0;
  ASSERT_TRUE(parseLoadReport("TEXT named_metrics.queue_depth=12, named_metrics.kv_cache_utilization=0.9", q, kv));
  EXPECT_EQ(q, 12);
  EXPECT_DOUBLE_EQ(kv, 0.9);
  EXPECT_FALSE(parseLoadReport("TEXT cpu_utilization=0.5", q, kv));
  auto& busy = s.get(1000);
  busy.reported_queue_depth = 12;
  busy.reported_kv_utilization = 0.9;
  busy.reported_at = p.now;
  EXPECT_EQ(p.spread(100)[1], 100);
  // A report a minute old has decayed to nothing: load alone decides.
  busy.reported_at = p.now - std::chrono::seconds(60);
  s.get(1001).outstanding = 3;
  EXPECT_EQ(p.spread(100)[0], 100);
}

TEST(LoadBalancer, LocalityPrefersZoneThenRegionAndSpillsOver) {
  auto m = model({1, 1, 1, 1}, config::LbPolicy::LeastRequest);
  m.locality.enabled = true;
  m.locality.spillover_threshold_percent = 70;
  const char* zones[] = {"a", "a", "b", "c"};
  const char* regions[] = {"eu", "eu", "eu", "us"};
  for (int i = 0; i < 4; ++i) {
    m.endpoints[i].zone = zones[i];
    m.endpoints[i].region = regions[i];
  }
  EndpointStates s;
  SelfLocality self{"eu", "a"};
  Picker p{m, s};
  p.self = &self;
  auto c = p.spread(100);
  EXPECT_EQ(c[0] + c[1], 100);
  // Half of zone a is down (below 70% healthy): the region takes over.
  s.get(1000).ejected_until = p.now + std::chrono::minutes(1);
  c = p.spread(100);
  EXPECT_EQ(c[2], 100);
  // The whole region down: the other region.
  s.get(1001).ejected_until = s.get(1002).ejected_until = p.now + std::chrono::minutes(1);
  EXPECT_EQ(p.spread(10)[3], 10);
}

TEST(LoadBalancer, ResidencyIsAHardFilter) {
  auto m = model({1, 1}, config::LbPolicy::LeastRequest);
  m.endpoints[0].region = "eu";
  m.endpoints[1].region = "us";
  EndpointStates s;
  const std::vector<std::string> eu{"eu"};
  Picker p{m, s};
  p.allowed = &eu;
  s.get(1000).ejected_until = p.now + std::chrono::minutes(1);
  // Even ejected, the eu endpoint is the only one allowed; never spilled.
  for (int i = 0; i < 10; ++i) EXPECT_EQ(p.pick(), 0);
  EXPECT_EQ(p.pick({true, false}), -1);
}

TEST(LoadBalancer, OutlierEjectionBacksOffAndIsCapped) {
  auto m = model({1, 1, 1, 1}, config::LbPolicy::LeastRequest);
  m.outlier.consecutive_failures = 2;
  m.outlier.base_ejection = std::chrono::milliseconds(1000);
  m.outlier.max_ejection_percent = 50;
  EndpointStates s;
  auto now = Clock::now();
  EXPECT_FALSE(recordOutcome(m, s, 0, false, now));
  EXPECT_FALSE(recordOutcome(m, s, 0, true, now));  // a success resets the run
  EXPECT_FALSE(recordOutcome(m, s, 0, false, now));
  EXPECT_TRUE(recordOutcome(m, s, 0, false, now));
  EXPECT_EQ(s.get(1000).ejected_until, now + std::chrono::milliseconds(1000));
  // A second ejection of the same endpoint lasts twice as long.
  now += std::chrono::seconds(2);
  recordOutcome(m, s, 0, false, now);
  EXPECT_TRUE(recordOutcome(m, s, 0, false, now));
  EXPECT_EQ(s.get(1000).ejected_until, now + std::chrono::milliseconds(2000));
  // At most half of the four endpoints may be out.
  recordOutcome(m, s, 1, false, now);
  EXPECT_TRUE(recordOutcome(m, s, 1, false, now));
  recordOutcome(m, s, 2, false, now);
  EXPECT_FALSE(recordOutcome(m, s, 2, false, now));
  EXPECT_LE(s.get(1002).ejected_until, now);
}

}  // namespace
}  // namespace infermesh::upstream
