// Micro-benchmarks of the per-request work the router does before any I/O:
// reading the model from the body and matching a route among 1,000.
#include <benchmark/benchmark.h>

#include <string>

#include "filters/builtin.h"
#include "filters/router/model_extractor.h"
#include "filters/router/route_matcher.h"
#include "proxy/config/compiler.h"
#include "proxy/config/yaml_loader.h"

namespace {

using namespace infermesh;

std::shared_ptr<const config::Snapshot> thousandModels() {
  filters::registerBuiltinFilters();
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
  filters::registerBuiltinFilters();
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

}  // namespace

BENCHMARK_MAIN();
