#include "proxy/config/rate_limit_compiler.h"

#include <gtest/gtest.h>

#include "proxy/config/compiler.h"
#include "proxy/config/yaml_loader.h"

namespace infermesh::config {
namespace {

std::string doc(const std::string& kind, const std::string& name, const std::string& spec) {
  return "---\napiVersion: infermesh.io/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec:\n" + spec;
}

std::string base() {
  return doc("Listener", "public", "  address: 127.0.0.1:0\n  filters: [{name: ratelimit}, {name: router}]\n") +
         doc("Model", "big",
             "  endpoints: [{address: 127.0.0.1:9001}]\n"
             "  pricing: {inputPer1kTokens: 0.01, outputPer1kTokens: 0.03}\n") +
         doc("Model", "small",
             "  endpoints: [{address: 127.0.0.1:9002}]\n"
             "  pricing: {inputPer1kTokens: 0.001, outputPer1kTokens: 0.002}\n") +
         doc("Model", "mid",
             "  endpoints: [{address: 127.0.0.1:9003}]\n"
             "  pricing: {inputPer1kTokens: 0.003, outputPer1kTokens: 0.006}\n");
}

CompileResult load(const std::string& text) {
  YamlLoader loader;
  loader.loadText(text, "limits.yaml");
  if (!loader.errors().empty()) return CompileResult{nullptr, loader.errors()};
  return compile(loader.resources(), 1);
}

TEST(RateLimitCompilerTest, NoLimitsNoTable) {
  auto r = load(base() + doc("Route", "chat", "  match: {pathPrefix: /v1/}\n"));
  ASSERT_TRUE(r.snapshot) << joinErrors(r.errors);
  EXPECT_EQ(r.snapshot->rate_limits, nullptr);
}

TEST(RateLimitCompilerTest, CompilesLimitsOfEveryOwner) {
  auto r = load(base() +
                doc("Route", "chat",
                    "  match: {pathPrefix: /v1/}\n"
                    "  limits: [{name: rps, requestsPerSecond: 50}]\n"
                    "  budgetDowngrade: [mid, small]\n") +
                doc("Tenant", "team-a",
                    "  apiKeys: [{name: ci, sha256: 5c2a6b1a1e1bd6b0b4a4c0b8e3bbdfd2aa7be2aa7c8b2bd28c3c0b5ea4a2b5a1}]\n"
                    "  limits:\n"
                    "    - {name: tpm, per: [apiKey, model], tokensPerMinute: 100000, requestsPerMinute: 600,\n"
                    "       scope: global, failMode: closed, onExhausted: allow, expectedOutputFloor: 64}\n"
                    "  budget: {perDay: 25.5, perMonth: 500, onExceeded: downgrade, scope: global}\n") +
                doc("Model", "tok",
                    "  endpoints: [{address: 127.0.0.1:9004}]\n"
                    "  tokenizer: {file: /tmp/cl100k_base.tiktoken, encoding: cl100k_base}\n"
                    "  limits: [{name: tpd, tokensPerDay: 1000000}]\n"));
  ASSERT_TRUE(r.snapshot) << joinErrors(r.errors);
  ASSERT_TRUE(r.snapshot->rate_limits);
  const auto& rl = *r.snapshot->rate_limits;
  ASSERT_EQ(rl.limits.size(), 3u);

  const auto& tpm = rl.limits[rl.by_tenant[0].at(0)];
  EXPECT_EQ(tpm.name, "Tenant/team-a/tpm");
  EXPECT_EQ(tpm.per, kByTenant | kByApiKey | kByModel);
  ASSERT_EQ(tpm.windows.size(), 2u);
  EXPECT_FALSE(tpm.windows[0].tokens);  // requests first
  EXPECT_EQ(tpm.windows[0].capacity, 600);
  EXPECT_TRUE(tpm.windows[1].tokens);
  EXPECT_EQ(tpm.windows[1].window, std::chrono::minutes(1));
  EXPECT_TRUE(tpm.global);
  EXPECT_FALSE(tpm.fail_open);
  EXPECT_FALSE(tpm.finish);
  EXPECT_EQ(tpm.output_floor, 64);
  EXPECT_EQ(tpm.block, 2000);  // a fiftieth of 100k
  EXPECT_TRUE(tpm.countsTokens());

  const auto& rps = rl.limits[rl.by_route[0].at(0)];
  EXPECT_EQ(rps.name, "Route/chat/rps");
  EXPECT_FALSE(rps.global);
  EXPECT_FALSE(rps.countsTokens());

  const auto* tok = r.snapshot->findModel("tok");
  ASSERT_NE(tok, nullptr);
  const auto& tpd = rl.limits[rl.by_model[tok->index].at(0)];
  EXPECT_EQ(tpd.name, "Model/tok/tpd");
  EXPECT_EQ(tpd.windows[0].window, std::chrono::hours(24));
  ASSERT_EQ(rl.tokenizer_by_model.size(), r.snapshot->models.size());
  EXPECT_EQ(rl.tokenizer_by_model[tok->index].encoding, "cl100k_base");

  ASSERT_EQ(rl.budgets.size(), 1u);
  EXPECT_EQ(rl.budget_by_tenant[0], 0);
  EXPECT_EQ(rl.budgets[0].per_day, 25'500'000);  // micros
  EXPECT_EQ(rl.budgets[0].per_month, 500'000'000);
  EXPECT_EQ(rl.budgets[0].per_hour, 0);
  EXPECT_TRUE(rl.budgets[0].downgrade);
  EXPECT_TRUE(rl.budgets[0].global);

  // Cheapest first, whatever order the YAML gives.
  ASSERT_EQ(rl.downgrade_by_route[0].size(), 2u);
  EXPECT_EQ(rl.downgrade_by_route[0][0]->name, "small");
  EXPECT_EQ(rl.downgrade_by_route[0][1]->name, "mid");
}

TEST(RateLimitCompilerTest, SignatureFollowsWhatTheCounterCounts) {
  const std::string route = "  match: {pathPrefix: /v1/}\n  limits: [{name: tpm, tokensPerMinute: ";
  auto a = load(base() + doc("Route", "chat", route + "1000}]\n"));
  auto b = load(base() + doc("Route", "chat", route + "1000}]\n  timeouts: {request: 30s}\n"));
  auto c = load(base() + doc("Route", "chat", route + "2000}]\n"));
  ASSERT_TRUE(a.snapshot && b.snapshot && c.snapshot) << joinErrors(a.errors) << joinErrors(b.errors)
                                                       << joinErrors(c.errors);
  EXPECT_EQ(a.snapshot->rate_limits->limits[0].signature, b.snapshot->rate_limits->limits[0].signature);
  EXPECT_NE(a.snapshot->rate_limits->limits[0].signature, c.snapshot->rate_limits->limits[0].signature);
}

void expectError(const std::string& spec_tail, const std::string& field, const std::string& words) {
  auto r = load(base() + doc("Route", "chat", "  match: {pathPrefix: /v1/}\n" + spec_tail));
  EXPECT_FALSE(r.snapshot) << spec_tail;
  const std::string all = joinErrors(r.errors);
  EXPECT_NE(all.find(field), std::string::npos) << all;
  EXPECT_NE(all.find(words), std::string::npos) << all;
}

TEST(RateLimitCompilerTest, RejectsWhatMeansNothingOrTooMuch) {
  expectError("  limits: [{tokensPerMinute: 10}]\n", "spec.limits[0].name", "is required");
  expectError("  limits: [{name: a}]\n", "spec.limits[0]", "sets no limit");
  expectError("  limits: [{name: a, tokensPerMinute: 10}, {name: a, tokensPerDay: 10}]\n", "spec.limits[1].name",
              "duplicate");
  expectError("  limits: [{name: a, per: [user], tokensPerMinute: 10}]\n", "spec.limits[0].per[0]",
              "tenant, apiKey, model or route");
  expectError("  limits: [{name: a, scope: fleet, tokensPerMinute: 10}]\n", "spec.limits[0].scope", "local or global");
  expectError("  limits: [{name: a, onExhausted: cut, tokensPerMinute: 10}]\n", "onExhausted", "finish or allow");
  expectError("  limits: [{name: a, failMode: maybe, tokensPerMinute: 10}]\n", "failMode", "open or closed");
  expectError("  limits: [{name: a, blockTokens: 50, tokensPerMinute: 1000}]\n", "blockTokens", "global limits only");
  expectError("  limits: [{name: a, scope: global, blockTokens: 5000, tokensPerMinute: 1000}]\n", "blockTokens",
              "larger than the limit");
  expectError("  limits: [{name: a, tokensPerMinute: 99999999999999999}]\n", "tokensPerMinute", "too large");
  expectError("  budgetDowngrade: [nope]\n", "spec.budgetDowngrade[0]", "not defined");
}

TEST(RateLimitCompilerTest, RejectsBadBudgetsAndTokenizers) {
  auto r = load(base() + doc("Route", "chat", "  match: {pathPrefix: /v1/}\n") +
                doc("Tenant", "t", "  budget: {perDay: -1, onExceeded: shrug}\n"));
  ASSERT_FALSE(r.snapshot);
  std::string all = joinErrors(r.errors);
  EXPECT_NE(all.find("spec.budget.perDay"), std::string::npos) << all;
  EXPECT_NE(all.find("reject or downgrade"), std::string::npos) << all;

  r = load(base() + doc("Route", "chat", "  match: {pathPrefix: /v1/}\n") +
           doc("Tenant", "t", "  budget: {perApiKey: true}\n"));
  ASSERT_FALSE(r.snapshot);
  EXPECT_NE(joinErrors(r.errors).find("sets no budget"), std::string::npos) << joinErrors(r.errors);

  r = load(base() + doc("Route", "chat", "  match: {pathPrefix: /v1/}\n") +
           doc("Model", "m", "  endpoints: [{address: 127.0.0.1:9009}]\n  tokenizer: {encoding: p50k_base}\n"));
  ASSERT_FALSE(r.snapshot);
  all = joinErrors(r.errors);
  EXPECT_NE(all.find("spec.tokenizer.file"), std::string::npos) << all;
  EXPECT_NE(all.find("cl100k_base or o200k_base"), std::string::npos) << all;
}

TEST(RateLimitCompilerTest, FilterConfigIsCheckedWithoutTouchingRedisOrFiles) {
  auto with = [](const std::string& config) {
    std::string y = base();
    const std::string from = "{name: ratelimit}";
    y.replace(y.find(from), from.size(), "{name: ratelimit, config: " + config + "}");
    return load(y + doc("Route", "chat", "  match: {pathPrefix: /v1/}\n"));
  };
  // Compiling (the control plane, infermeshctl validate) opens nothing.
  auto r = with("{redis: '127.0.0.1:1', redisPasswordFile: /nonexistent/pw, stateFile: /nonexistent/state, "
                "keyPrefix: 'x:', extendTokens: 8}");
  EXPECT_TRUE(r.snapshot) << joinErrors(r.errors);
  for (auto [config, words] : {std::pair<const char*, const char*>{"{redis: 'host:99999'}", "1..65535"},
                               {"{redis: ''}", "host:port"},
                               {"{stateFile: 3}", "stateFile must be a path"},
                               {"{extendTokens: 0}", "extendTokens must be 1..1000000"},
                               {"{burst: 1}", "unknown setting \"burst\""}}) {
    r = with(config);
    EXPECT_FALSE(r.snapshot) << config;
    EXPECT_NE(joinErrors(r.errors).find(words), std::string::npos) << config << ": " << joinErrors(r.errors);
  }
}

}  // namespace
}  // namespace infermesh::config
