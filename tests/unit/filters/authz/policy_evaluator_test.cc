#include "filters/authz/policy_evaluator.h"

#include <gtest/gtest.h>

#include "proxy/config/compiler.h"
#include "proxy/config/yaml_loader.h"

namespace infermesh::authz {
namespace {

using config::Snapshot;
using Outcome = Decision::Outcome;

constexpr const char* kBase = R"(apiVersion: infermesh.io/v1
kind: Listener
metadata: {name: public}
spec: {address: 127.0.0.1:0, filters: [{name: authn}, {name: authz}, {name: router}]}
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: chat}
spec:
  aliases: [gpt]
  capabilities: [chat]
  endpoints: [{address: 127.0.0.1:9001, region: eu}, {address: 127.0.0.1:9002, region: us}]
---
apiVersion: infermesh.io/v1
kind: Model
metadata: {name: embed}
spec:
  capabilities: [embeddings]
  endpoints: [{address: 127.0.0.1:9003, region: us}]
---
apiVersion: infermesh.io/v1
kind: Route
metadata: {name: chat}
spec: {match: {pathPrefix: /v1/}}
---
apiVersion: infermesh.io/v1
kind: Tenant
metadata: {name: team-a}
spec: {spiffeIds: ["spiffe://mesh.local/ns/a/"]}
---
apiVersion: infermesh.io/v1
kind: Tenant
metadata: {name: team-b}
spec: {spiffeIds: ["spiffe://mesh.local/ns/b/"]}
)";

class EvaluatorTest : public ::testing::Test {
 protected:
  void load(const std::string& policies) {
    config::YamlLoader loader;
    loader.loadText(std::string(kBase) + policies, "gov.yaml");
    ASSERT_TRUE(loader.errors().empty()) << config::joinErrors(loader.errors());
    auto r = config::compile(loader.resources(), 1);
    ASSERT_TRUE(r.snapshot) << config::joinErrors(r.errors);
    snap_ = r.snapshot;
  }
  Decision decide(const char* tenant, const char* model, std::string_view data_class = "internal") {
    const auto& g = *snap_->governance;
    id_ = filter::Identity{};
    if (tenant) {
      id_.method = filter::Identity::Method::Mtls;
      id_.tenant = g.findTenant(tenant);
      id_.principal = std::string("spiffe://mesh.local/ns/") + tenant + "/sa/app";
    }
    Facts f;
    f.identity = &id_;
    f.model = model ? snap_->findModel(model) : nullptr;
    f.data_class = data_class;
    f.route = 0;
    return evaluate(g, 0, f);
  }
  std::shared_ptr<const Snapshot> snap_;
  filter::Identity id_;
};

std::string policy(const std::string& name, const std::string& spec) {
  return "---\napiVersion: infermesh.io/v1\nkind: Policy\nmetadata: {name: " + name + "}\nspec:\n  listeners: [public]\n" +
         spec;
}

TEST_F(EvaluatorTest, DenyBeforeAllowWhateverTheOrder) {
  load(policy("p", "  rules:\n    - {name: a-all, action: allow, tenants: [team-a]}\n"
                   "    - {name: no-embed, action: deny, models: [embed]}\n"));
  EXPECT_EQ(decide("team-a", "chat").outcome, Outcome::Allow);
  const auto d = decide("team-a", "embed");
  EXPECT_EQ(d.outcome, Outcome::Deny);
  EXPECT_EQ(d.rule, "no-embed");
  EXPECT_EQ(d.policy->name, "p");
}

TEST_F(EvaluatorTest, DefaultDenyRefusesWhatNoRuleAllows) {
  load(policy("p", "  defaultAction: deny\n  rules:\n    - {name: a-chat, action: allow, tenants: [team-a], capabilities: [chat]}\n"));
  EXPECT_EQ(decide("team-a", "chat").outcome, Outcome::Allow);
  EXPECT_EQ(decide("team-a", "chat").rule, "a-chat");
  EXPECT_EQ(decide("team-b", "chat").outcome, Outcome::Deny);  // cross-tenant
  EXPECT_EQ(decide("team-b", "chat").rule, "default");
  EXPECT_EQ(decide("team-a", "embed").outcome, Outcome::Deny);  // capability
  EXPECT_EQ(decide(nullptr, "chat").outcome, Outcome::Deny);    // anonymous never matches a tenant rule
}

TEST_F(EvaluatorTest, DryRunRecordsButDoesNotDeny) {
  load(policy("watch", "  mode: dry_run\n  rules:\n    - {name: no-b, action: deny, tenants: [team-b]}\n"));
  const auto d = decide("team-b", "chat");
  EXPECT_EQ(d.outcome, Outcome::DryRunDeny);
  ASSERT_NE(d.dry_run_policy, nullptr);
  EXPECT_EQ(d.dry_run_rule, "no-b");
  EXPECT_EQ(decide("team-a", "chat").outcome, Outcome::Allow);
}

TEST_F(EvaluatorTest, RegionRulesNarrowEndpointsAndNeverSpill) {
  load(policy("residency", "  rules:\n    - {name: pii-eu, action: deny, dataClasses: [pii], regions: [us]}\n"));
  auto d = decide("team-a", "chat", "pii");
  EXPECT_EQ(d.outcome, Outcome::Allow);
  EXPECT_TRUE(d.regionPasses("eu"));
  EXPECT_FALSE(d.regionPasses("us"));
  // embed runs only in us: nothing left, so refused rather than sent there.
  d = decide("team-a", "embed", "pii");
  EXPECT_EQ(d.outcome, Outcome::Deny);
  EXPECT_EQ(d.reason, "no_allowed_region");
  EXPECT_EQ(decide("team-a", "embed", "public").outcome, Outcome::Allow);
}

TEST_F(EvaluatorTest, AllowRuleWithRegionsRestrictsToThem) {
  load(policy("p", "  defaultAction: deny\n  rules:\n    - {name: b-eu, action: allow, tenants: [team-b], regions: [eu]}\n"));
  const auto d = decide("team-b", "chat");
  EXPECT_EQ(d.outcome, Outcome::Allow);
  EXPECT_TRUE(d.restricted);
  EXPECT_TRUE(d.regionPasses("eu"));
  EXPECT_FALSE(d.regionPasses("us"));
}

TEST_F(EvaluatorTest, EveryAttachedPolicyMustAllow) {
  load(policy("open", "  rules: [{name: all, action: allow}]\n") +
       policy("strict", "  defaultAction: deny\n  rules: [{name: a, action: allow, tenants: [team-a]}]\n"));
  EXPECT_EQ(decide("team-a", "chat").outcome, Outcome::Allow);
  const auto d = decide("team-b", "chat");
  EXPECT_EQ(d.outcome, Outcome::Deny);
  EXPECT_EQ(d.policy->name, "strict");
}

TEST(PrincipalTest, ExactOrTrailingStarPrefix) {
  EXPECT_TRUE(principalMatches("team-a/ci", "team-a/ci"));
  EXPECT_FALSE(principalMatches("team-a/ci", "team-a/ci2"));
  EXPECT_TRUE(principalMatches("https://idp#svc-*", "https://idp#svc-batch"));
  EXPECT_FALSE(principalMatches("https://idp#svc-*", "https://idp#user"));
}

}  // namespace
}  // namespace infermesh::authz
