#include "proxy/upstream/load_balancer.h"

#include <gtest/gtest.h>

#include <map>

namespace infermesh::upstream {
namespace {

config::ModelConfig model(std::vector<std::uint32_t> weights, config::LbPolicy policy) {
  config::ModelConfig m;
  m.name = "m";
  m.lb_policy = policy;
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

std::map<int, int> spread(const config::ModelConfig& m, EndpointStates& s, int picks, Clock::time_point now) {
  std::uint32_t rr = 0;
  std::mt19937_64 rng(42);
  std::map<int, int> count;
  for (int i = 0; i < picks; ++i) {
    std::vector<bool> tried(m.endpoints.size(), false);
    ++count[pickEndpoint(m, s, rr, rng, tried, now)];
  }
  return count;
}

TEST(LoadBalancer, WeightedRoundRobin) {
  auto m = model({1, 3}, config::LbPolicy::RoundRobin);
  EndpointStates s;
  auto c = spread(m, s, 400, Clock::now());
  EXPECT_EQ(c[0], 100);
  EXPECT_EQ(c[1], 300);
}

TEST(LoadBalancer, LeastRequestPrefersTheLessLoaded) {
  auto m = model({1, 1, 1}, config::LbPolicy::LeastRequest);
  EndpointStates s;
  s.get(1000).outstanding = 10;
  s.get(1001).outstanding = 10;
  auto c = spread(m, s, 300, Clock::now());
  // Endpoint 2 wins every pair it is in (2 of 3 pairs).
  EXPECT_GT(c[2], 150);
  EXPECT_LT(c[0] + c[1], 150);
}

TEST(LoadBalancer, TriedAndEjectedEndpointsAreSkipped) {
  auto m = model({1, 1}, config::LbPolicy::LeastRequest);
  EndpointStates s;
  std::uint32_t rr = 0;
  std::mt19937_64 rng(1);
  const auto now = Clock::now();
  EXPECT_EQ(pickEndpoint(m, s, rr, rng, {true, false}, now), 1);
  EXPECT_EQ(pickEndpoint(m, s, rr, rng, {true, true}, now), -1);
  s.get(1001).ejected_until = now + std::chrono::seconds(5);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(pickEndpoint(m, s, rr, rng, {false, false}, now), 0);
  // Everything else tried: an ejected endpoint beats a certain 503.
  EXPECT_EQ(pickEndpoint(m, s, rr, rng, {true, false}, now), 1);
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
