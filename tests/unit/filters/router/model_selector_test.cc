#include "filters/router/model_selector.h"

#include <gtest/gtest.h>

#include <map>

#include "proxy/config/compiler.h"
#include "proxy/config/yaml_loader.h"

namespace infermesh::router {
namespace {

std::shared_ptr<const config::Snapshot> compile(const std::string& yaml) {
  config::YamlLoader loader;
  loader.loadText(yaml, "test.yaml");
  EXPECT_TRUE(loader.errors().empty()) << config::joinErrors(loader.errors());
  auto r = config::compile(loader.resources(), 1);
  EXPECT_TRUE(r.snapshot) << config::joinErrors(r.errors);
  return r.snapshot;
}

const char* kModels = R"(
apiVersion: infermesh.io/v1
kind: Listener
metadata: {name: main}
spec: {address: 127.0.0.1:0, filters: [{name: router}]}
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: big}
spec: {capabilities: [chat, code], contextWindow: 128000, pricing: {inputPer1kTokens: 0.01, outputPer1kTokens: 0.03},
       regions: [us], endpoints: [{address: '127.0.0.1:9001'}]}
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: small}
spec: {capabilities: [chat], contextWindow: 1000, pricing: {inputPer1kTokens: 0.0005, outputPer1kTokens: 0.001},
       regions: [eu], endpoints: [{address: '127.0.0.1:9002'}]}
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: embedder}
spec: {capabilities: [embeddings], endpoints: [{address: '127.0.0.1:9003'}]}
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: cheap}
spec: {match: {headers: [{name: x-objective, value: cheap}]}, autoSelect: {objective: cheapest}}
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: fast}
spec: {match: {headers: [{name: x-objective, value: fast}]}, autoSelect: {objective: fastest}}
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: preferred}
spec: {match: {headers: [{name: x-objective, value: preferred}]},
       autoSelect: {objective: preference, candidates: [big, small]}}
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: canary}
spec: {split: [{model: big, weight: 90}, {model: small, weight: 10}]}
)";

const config::RouteConfig& route(const config::Snapshot& s, const std::string& name) {
  for (const auto& r : s.routes)
    if (r.name == name) return r;
  throw std::runtime_error("no route " + name);
}

TEST(ModelSelector, CheapestCapableModelThatFits) {
  auto s = compile(kModels);
  AutoRequest req;
  req.capability = "chat";
  EXPECT_EQ(selectModel(*s, route(*s, "cheap"), req)->name, "small");
  req.prompt_tokens = 5000;  // does not fit small's window
  EXPECT_EQ(selectModel(*s, route(*s, "cheap"), req)->name, "big");
  req.capability = "code";
  req.prompt_tokens = 0;
  EXPECT_EQ(selectModel(*s, route(*s, "cheap"), req)->name, "big");
  req.capability = "translation";
  EXPECT_EQ(selectModel(*s, route(*s, "cheap"), req), nullptr);
}

TEST(ModelSelector, FastestByObservedTimeToFirstTokenExploresUnmeasured) {
  auto s = compile(kModels);
  std::map<std::string, double> ttft{{"big", 0.2}, {"small", 0}};
  AutoRequest req;
  req.capability = "chat";
  req.observed_ttft = [&](const config::ModelConfig& m) { return ttft[m.name]; };
  EXPECT_EQ(selectModel(*s, route(*s, "fast"), req)->name, "small");  // not measured yet
  ttft["small"] = 0.9;
  EXPECT_EQ(selectModel(*s, route(*s, "fast"), req)->name, "big");
}

TEST(ModelSelector, PreferenceOrderSkipsUnavailableAndRespectsResidency) {
  auto s = compile(kModels);
  AutoRequest req;
  req.capability = "chat";
  EXPECT_EQ(selectModel(*s, route(*s, "preferred"), req)->name, "big");
  req.available = [](const config::ModelConfig& m) { return m.name != "big"; };
  EXPECT_EQ(selectModel(*s, route(*s, "preferred"), req)->name, "small");
  req.available = nullptr;
  const std::vector<std::string_view> eu{"eu"};
  req.request_regions = &eu;
  EXPECT_EQ(selectModel(*s, route(*s, "preferred"), req)->name, "small");
}

TEST(ModelSelector, WeightedSplit) {
  auto s = compile(kModels);
  const auto& r = route(*s, "canary");
  ASSERT_EQ(r.split_total, 100u);
  std::map<std::string, int> count;
  for (std::uint32_t d = 0; d < 100; ++d) ++count[pickSplit(r, d)->name];
  EXPECT_EQ(count["big"], 90);
  EXPECT_EQ(count["small"], 10);
  EXPECT_EQ(parseRegionList(" eu-west-1, eu-central-1 ,"), (std::vector<std::string_view>{"eu-west-1", "eu-central-1"}));
}

}  // namespace
}  // namespace infermesh::router
