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

// Found by tests/fuzz/orca_load_report_fuzz: std::from_chars reads "inf"
// and "nan", and an infinite queue depth times a decayed weight of 0 made
// the endpoint's cost NaN, which compares false against every other cost.
TEST(LoadBalancer, LoadReportsRefuseNumbersThatAreNotFinite) {
  for (const char* header : {"queue_depth=inf", "queue_depth=INFINITY", "queue_depth=nan", "kv_cache_utilization=inf",
                             "TEXT named_metrics.queue_depth=-inf", "queue_depth=1e999"}) {
    LoadReport r;
    EXPECT_FALSE(parseLoadReport(header, r)) << header;
    EXPECT_FALSE(r.any()) << header;
  }
  LoadReport r;
  ASSERT_TRUE(parseLoadReport("queue_depth=inf, queue_depth=3", r));
  EXPECT_EQ(r.waiting, 3);
}

TEST(LoadBalancer, LoadAwareFollowsFreshReports) {
  auto m = model({1, 1}, config::LbPolicy::LoadAware);
  m.lb.load_report_half_life = std::chrono::milliseconds(1000);
  m.endpoints[0].capacity = 4;
  m.endpoints[1].capacity = 4;
  EndpointStates s;
  Picker p{m, s};
  for (auto key : {1000, 1001}) {
    s.get(key).base_ttft_seconds = 0.04;
    s.get(key).slot_seconds = 0.1;
  }
  // Another proxy's traffic: 4 generating and 8 waiting, none of them ours.
  LoadReport r;
  ASSERT_TRUE(parseLoadReport("TEXT named_metrics.num_requests_running=4, named_metrics.queue_depth=8", r));
  applyLoadReport(s.get(1000), r, p.now);
  EXPECT_EQ(p.spread(100)[1], 100);
  // A report a minute old has decayed to nothing: our own load decides.
  s.get(1000).reported_at = p.now - std::chrono::seconds(60);
  s.get(1001).outstanding = 6;
  EXPECT_EQ(p.spread(100)[0], 100);
}

TEST(LoadBalancer, ParsesLoadReportFields) {
  LoadReport r;
  ASSERT_TRUE(parseLoadReport("TEXT named_metrics.queue_depth=12, named_metrics.kv_cache_utilization=0.9", r));
  EXPECT_EQ(r.waiting, 12);
  EXPECT_DOUBLE_EQ(r.kv_utilization, 0.9);
  EXPECT_LT(r.running, 0);  // not carried
  EXPECT_LT(r.capacity, 0);
  r = {};
  ASSERT_TRUE(parseLoadReport("num_requests_running=3, num_requests_waiting=2, max_num_seqs=8, kv_cache_usage_perc=1.7", r));
  EXPECT_EQ(r.running, 3);
  EXPECT_EQ(r.waiting, 2);
  EXPECT_EQ(r.capacity, 8);
  EXPECT_EQ(r.kv_utilization, 1.0);  // clamped
  // Prometheus text, as vLLM's /metrics: labels, comments, one line per model.
  r = {};
  ASSERT_TRUE(parseLoadReport("# HELP vllm:num_requests_running Running.\n# TYPE vllm:num_requests_running gauge\n"
                              "vllm:num_requests_running{model_name=\"a\"} 2\n"
                              "vllm:num_requests_running{model_name=\"b\"} 1\n"
                              "vllm:num_requests_waiting{model_name=\"a\"} 5.0\n"
                              "vllm:gpu_cache_usage_perc{model_name=\"a\"} 0.25\n"
                              "vllm:other_metric 7\n",
                              r));
  EXPECT_EQ(r.running, 3);
  EXPECT_EQ(r.waiting, 5);
  EXPECT_DOUBLE_EQ(r.kv_utilization, 0.25);
  // Nothing usable: unknown keys, negative or malformed values.
  r = {};
  EXPECT_FALSE(parseLoadReport("TEXT cpu_utilization=0.5", r));
  EXPECT_FALSE(parseLoadReport("num_requests_running=-1, num_requests_waiting=x, running=1e999", r));
  EXPECT_FALSE(r.any());
}

TEST(LoadBalancer, CapacityScalesTheCost) {
  // Same speed, same requests in flight: the endpoint with 8 batch slots
  // starts the next request at once, the one with 2 queues it.
  auto m = model({1, 1}, config::LbPolicy::LoadAware);
  m.endpoints[0].capacity = 2;
  m.endpoints[1].capacity = 8;
  EndpointStates s;
  Picker p{m, s};
  for (auto key : {1000, 1001}) {
    s.get(key).base_ttft_seconds = 0.04;
    s.get(key).slot_seconds = 0.1;
    s.get(key).outstanding = 3;
  }
  EXPECT_EQ(p.spread(100)[1], 100);
  EXPECT_DOUBLE_EQ(predictedTtft(m.endpoints[1], s.get(1001), p.now, std::chrono::seconds(1)), 0.04);
  // 3 in flight on 2 slots: two ahead of the next one, a slot frees every 50 ms.
  EXPECT_DOUBLE_EQ(predictedTtft(m.endpoints[0], s.get(1000), p.now, std::chrono::seconds(1)), 0.04 + 2 * 0.1 / 2);
  // Idle, both start at once: spread over both.
  s.get(1000).outstanding = s.get(1001).outstanding = 0;
  auto c = p.spread(200);
  EXPECT_GT(c[0], 50);
  EXPECT_GT(c[1], 50);
  // Announced capacity and learned capacity count when none is configured.
  config::EndpointConfig plain;
  EndpointHealth h;
  EXPECT_EQ(effectiveCapacity(plain, h), 1);
  h.learned_capacity = 3;
  EXPECT_EQ(effectiveCapacity(plain, h), 3);
  h.reported_capacity = 16;
  EXPECT_EQ(effectiveCapacity(plain, h), 16);
  plain.capacity = 4;
  EXPECT_EQ(effectiveCapacity(plain, h), 4);
}

TEST(LoadBalancer, HeterogeneousFleetAvoidsTheFullSmallEndpoint) {
  // fast (8 slots), slow (long prefill), small (2 slots, both busy): the
  // next request goes to fast, whichever two a random pair would have been.
  auto m = model({1, 1, 1}, config::LbPolicy::LoadAware);
  m.endpoints[0].capacity = 8;
  m.endpoints[1].capacity = 8;
  m.endpoints[2].capacity = 2;
  EndpointStates s;
  Picker p{m, s};
  s.get(1000) = {.outstanding = 4, .base_ttft_seconds = 0.03, .slot_seconds = 0.1};
  s.get(1001) = {.outstanding = 0, .base_ttft_seconds = 0.3, .slot_seconds = 0.4};
  s.get(1002) = {.outstanding = 2, .base_ttft_seconds = 0.03, .slot_seconds = 0.1};
  EXPECT_EQ(p.spread(100)[0], 100);
  // fast and small both queueing deep: the idle slow endpoint is now quicker.
  s.get(1000).outstanding = 40;
  s.get(1002).outstanding = 8;
  EXPECT_EQ(p.spread(100)[1], 100);
}

TEST(LoadBalancer, QueueEstimateFollowsOwnRequestsBetweenReports) {
  EndpointHealth h;
  const auto now = Clock::now();
  const auto half_life = std::chrono::seconds(1);
  h.outstanding = 1;
  // 2 generating, 3 waiting, one of them ours.
  applyLoadReport(h, LoadReport{.running = 2, .waiting = 3}, now);
  EXPECT_EQ(h.learned_capacity, 2);  // requests wait while 2 run: 2 slots
  EXPECT_DOUBLE_EQ(estimatedLoad(h, now, half_life), 5);
  // Two more of ours go out before the next report: counted at once.
  h.outstanding = 3;
  EXPECT_DOUBLE_EQ(estimatedLoad(h, now, half_life), 7);
  // Ours finish: counted at once too; the others' share (4) ages.
  h.outstanding = 0;
  EXPECT_DOUBLE_EQ(estimatedLoad(h, now + half_life, half_life), 2);
  EXPECT_NEAR(estimatedLoad(h, now + 20 * half_life, half_life), 0, 1e-3);
  // A report that holds only our own requests: nothing from others.
  h.outstanding = 4;
  applyLoadReport(h, LoadReport{.running = 2, .waiting = 2}, now);
  EXPECT_DOUBLE_EQ(estimatedLoad(h, now, half_life), 4);
  // A full KV cache means no free slot, whatever the counts say.
  config::EndpointConfig ep;
  ep.capacity = 8;
  h = {};
  h.base_ttft_seconds = 0.04;
  h.slot_seconds = 0.08;
  applyLoadReport(h, LoadReport{.running = 1, .waiting = 0, .kv_utilization = 0.99}, now);
  EXPECT_DOUBLE_EQ(predictedTtft(ep, h, now, half_life), 0.04 + 1 * 0.08 / 8);
}

TEST(LoadBalancer, CapacityIsLearnedFromObservedQueueing) {
  EndpointHealth h;
  auto now = Clock::now();
  recordFirstByte(h, 0.04, 1, now);
  // Fast with 3 in flight: at least 3 slots.
  recordFirstByte(h, 0.041, 3, now += std::chrono::milliseconds(10));
  EXPECT_EQ(h.learned_capacity, 3);
  // Queued (far slower than the base) with 3 in flight: fewer than 3.
  recordFirstByte(h, 0.5, 3, now += std::chrono::milliseconds(10));
  EXPECT_EQ(h.learned_capacity, 2);
  // The slow answer barely moves the unqueued base.
  EXPECT_LT(h.base_ttft_seconds, 0.07);
  // The slot time leaves out the wait in the queue.
  recordCompletion(h, 0.6, 0.5);
  EXPECT_NEAR(h.slot_seconds, 0.6 - (0.5 - h.base_ttft_seconds), 1e-9);
}

TEST(LoadBalancer, EwmaDoesNotCollapseOnOneFastSample) {
  EndpointHealth h;
  auto now = Clock::now();
  for (int i = 0; i < 5; ++i) recordLatency(h, 0.3, now += std::chrono::milliseconds(100));
  // A quiet spell, then one lucky fast answer.
  now += std::chrono::seconds(5);
  const double before = currentEwma(h, now);
  recordLatency(h, 0.01, now);
  EXPECT_GT(currentEwma(h, now), before - kMaxFastSampleWeight * (before - 0.01) - 1e-9);
  EXPECT_GT(currentEwma(h, now), 0.1);
  // A slower sample still counts at once (peak-sensitive).
  recordLatency(h, 0.5, now += std::chrono::milliseconds(10));
  EXPECT_DOUBLE_EQ(currentEwma(h, now), 0.5);
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
