// Micro-benchmarks of the per-request work the router does before any I/O:
// reading the model from the body and matching a route among 1,000.
#include <benchmark/benchmark.h>

#include <string>

#include "filters/router/model_extractor.h"
#include "filters/router/model_selector.h"
#include "filters/router/route_matcher.h"
#include "proxy/config/compiler.h"
#include "proxy/config/yaml_loader.h"
#include "proxy/upstream/load_balancer.h"

namespace {

using namespace infermesh;

std::shared_ptr<const config::Snapshot> thousandModels() {
  std::string yaml =
      "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\n"
      "spec: {address: '127.0.0.1:0', filters: [{name: router}]}\n";
  for (int i = 0; i < 1000; ++i) {
    const std::string n = std::to_string(i);
    yaml += "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: model-" + n +
            "}\nspec: {endpoints: [{address: '127.0.0.1:" + std::to_string(10000 + i) + "'}]}\n";
    yaml += "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: route-" + n +
            "}\nspec: {match: {pathPrefix: /v1/, models: [model-" + n + "]}, model: model-" + n + "}\n";
  }
  config::YamlLoader loader;
  loader.loadText(yaml, "bench.yaml");
  return config::compile(loader.resources(), 1).snapshot;
}

void BM_ExtractModel(benchmark::State& state) {
  router::ModelExtractor extractor;
  std::string body =
      R"({"messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"Write a haiku about proxies and tokens."}],"temperature":0.2,"model":"model-500","stream":true})";
  router::ModelExtractor::ensurePadding(body);
  for (auto _ : state) {
    router::BodyFields f;
    benchmark::DoNotOptimize(extractor.extract(body, f));
  }
}
BENCHMARK(BM_ExtractModel);

void BM_MatchRoute1000(benchmark::State& state) {
  auto snap = thousandModels();
  filter::RequestHead req;
  req.method = "POST";
  req.target = "/v1/chat/completions";
  const std::string model = "model-" + std::to_string(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(router::matchRoute(*snap, 0, req, model));
}
BENCHMARK(BM_MatchRoute1000)->Arg(0)->Arg(500)->Arg(999);

// 1,000 routes without a model condition, told apart by a tenant header:
// the worst case, every route is tried in order.
void BM_MatchRouteByHeader1000(benchmark::State& state) {
  std::string yaml =
      "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\n"
      "spec: {address: '127.0.0.1:0', filters: [{name: router}]}\n"
      "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: m}\n"
      "spec: {endpoints: [{address: '127.0.0.1:1'}]}\n";
  for (int i = 0; i < 1000; ++i)
    yaml += "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: r" + std::to_string(i) +
            "}\nspec: {match: {headers: [{name: x-tenant, value: t" + std::to_string(i) + "}]}, model: m}\n";
  config::YamlLoader loader;
  loader.loadText(yaml, "bench.yaml");
  auto snap = config::compile(loader.resources(), 1).snapshot;
  filter::RequestHead req;
  req.method = "POST";
  req.target = "/v1/chat/completions";
  req.headers.add("content-type", "application/json");
  req.headers.add("x-tenant", "t" + std::to_string(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(router::matchRoute(*snap, 0, req, "m"));
}
BENCHMARK(BM_MatchRouteByHeader1000)->Arg(0)->Arg(999);

// One model with 8 endpoints under each policy: the per-attempt pick.
void BM_PickEndpoint(benchmark::State& state) {
  config::ModelConfig m;
  m.lb.policy = static_cast<config::LbPolicy>(state.range(0));
  for (int i = 0; i < 8; ++i) {
    config::EndpointConfig e;
    e.key = 100 + static_cast<std::uint64_t>(i);
    m.endpoints.push_back(e);
    m.total_weight += e.weight;
  }
  upstream::EndpointStates states;
  const auto now = upstream::Clock::now();
  for (int i = 0; i < 8; ++i) {
    auto& h = states.get(100 + static_cast<std::uint64_t>(i));
    h.outstanding = i % 3;
    upstream::recordLatency(h, 0.05 * (i + 1), now);
    h.reported_waiting = i;
    h.reported_at = now;
  }
  std::vector<bool> tried(8, false);
  std::uint32_t rr = 0;
  std::mt19937_64 rng(1);
  std::uint64_t key = 0;
  for (auto _ : state) {
    const upstream::PickRequest req{tried, now, ++key * 0x9e3779b97f4a7c15ULL};
    benchmark::DoNotOptimize(upstream::pickEndpoint(m, states, rr, rng, req));
  }
}
BENCHMARK(BM_PickEndpoint)->ArgName("policy")->DenseRange(0, 4);

// The whole per-request decision with 1,000 models: route match, then an
// "auto" selection over every model by price, then the endpoint pick.
void BM_RoutingDecision1000Auto(benchmark::State& state) {
  std::string yaml =
      "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\n"
      "spec: {address: '127.0.0.1:0', filters: [{name: router}]}\n"
      "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: auto}\n"
      "spec: {match: {pathPrefix: /v1/}, autoSelect: {objective: cheapest}}\n";
  for (int i = 0; i < 1000; ++i)
    yaml += "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: model-" + std::to_string(i) +
            "}\nspec: {capabilities: [" + (i % 2 ? "chat" : "embeddings") + "], pricing: {inputPer1kTokens: " +
            std::to_string(1 + (i * 7919) % 1000) + "}, endpoints: [{address: '127.0.0.1:" + std::to_string(10000 + i) +
            "'}, {address: '127.0.0.2:" + std::to_string(10000 + i) + "'}]}\n";
  config::YamlLoader loader;
  loader.loadText(yaml, "bench.yaml");
  auto snap = config::compile(loader.resources(), 1).snapshot;
  filter::RequestHead req;
  req.method = "POST";
  req.target = "/v1/chat/completions";
  upstream::EndpointStates states;
  std::vector<bool> tried(2, false);
  std::uint32_t rr = 0;
  std::mt19937_64 rng(1);
  router::AutoRequest ar;
  ar.capability = "chat";
  for (auto _ : state) {
    const auto* route = router::matchRoute(*snap, 0, req, "auto");
    const auto* model = router::selectModel(*snap, *route, ar);
    const upstream::PickRequest pick{tried, upstream::Clock::now()};
    benchmark::DoNotOptimize(upstream::pickEndpoint(*model, states, rr, rng, pick));
  }
}
BENCHMARK(BM_RoutingDecision1000Auto);

}  // namespace

BENCHMARK_MAIN();
