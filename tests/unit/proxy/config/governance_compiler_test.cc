#include "proxy/config/governance_compiler.h"

#include <gtest/gtest.h>

#include "proxy/config/compiler.h"
#include "proxy/config/yaml_loader.h"

namespace infermesh::config {
namespace {

// Two distinct SHA-256 values (hex).
constexpr const char* kHashA = "5c2a6b1a1e1bd6b0b4a4c0b8e3bbdfd2aa7be2aa7c8b2bd28c3c0b5ea4a2b5a1";
constexpr const char* kHashB = "0b8e3bbdfd2aa7be2aa7c8b2bd28c3c0b5ea4a2b5a15c2a6b1a1e1bd6b0b4a4c";

std::string base(const std::string& chain = "[{name: authn}, {name: authz}, {name: router}]") {
  return "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: public}\n"
         "spec: {address: 127.0.0.1:0, filters: " + chain + "}\n"
         "---\napiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: chat}\n"
         "spec:\n  capabilities: [chat]\n  endpoints:\n    - {address: 127.0.0.1:9001, region: eu}\n"
         "    - {address: 127.0.0.1:9002, region: us}\n"
         "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: chat}\n"
         "spec: {match: {pathPrefix: /v1/}}\n";
}

std::string tenant(const std::string& name, const std::string& spec) {
  return "---\napiVersion: infermesh.io/v1\nkind: Tenant\nmetadata: {name: " + name + "}\nspec:\n" + spec;
}
std::string policy(const std::string& name, const std::string& spec) {
  return "---\napiVersion: infermesh.io/v1\nkind: Policy\nmetadata: {name: " + name + "}\nspec:\n" + spec;
}

CompileResult load(const std::string& text) {
  YamlLoader loader;
  loader.loadText(text, "gov.yaml");
  if (!loader.errors().empty()) return CompileResult{nullptr, loader.errors()};
  return compile(loader.resources(), 1);
}

TEST(GovernanceCompilerTest, CompilesTenantsAndPolicies) {
  auto r = load(base() +
                tenant("team-a", std::string("  apiKeys: [{name: ci, sha256: ") + kHashA + "}]\n"
                                 "  spiffeIds: [\"spiffe://mesh.local/ns/a/\"]\n  dataClasses: [public, internal]\n") +
                tenant("team-b", std::string("  apiKeys: [{name: ci, sha256: ") + kHashB + "}]\n"
                                 "  jwt: [{issuer: \"https://idp.test\", claim: team, values: [b]}]\n") +
                policy("prod", "  listeners: [public]\n  defaultAction: deny\n"
                               "  authentication:\n    jwtIssuers: [{issuer: \"https://idp.test\", jwksFile: /tmp/none.json}]\n"
                               "  rules:\n    - {name: a-chat, action: allow, tenants: [team-a], models: [chat]}\n"
                               "    - {name: no-us, action: deny, regions: [us]}\n"));
  ASSERT_TRUE(r.snapshot) << joinErrors(r.errors);
  const auto& g = *r.snapshot->governance;
  ASSERT_EQ(g.tenants.size(), 2u);
  EXPECT_EQ(g.tenants[0].default_data_class, "public");  // the first allowed when none is given
  ASSERT_EQ(g.api_keys.size(), 2u);
  EXPECT_EQ(g.api_keys[0].principal, "team-a/ci");
  ASSERT_EQ(g.issuers.size(), 1u);
  ASSERT_EQ(g.issuers[0].tenants.size(), 1u);
  EXPECT_EQ(g.issuers[0].tenants[0].tenant, &g.tenants[1]);
  ASSERT_EQ(g.policies.size(), 1u);
  const auto& p = g.policies[0];
  EXPECT_TRUE(p.default_deny);
  ASSERT_EQ(p.rules.size(), 2u);
  EXPECT_EQ(p.rules[0].name, "no-us");  // deny rules first, whatever their order
  EXPECT_EQ(g.by_listener[0], std::vector<std::uint32_t>{0});
  EXPECT_FALSE(p.version.empty());
  // The dump shows hashes only (there is nothing else to show).
  EXPECT_NE(r.snapshot->dump_json.find("\"tenants\""), std::string::npos);
}

TEST(GovernanceCompilerTest, RefusesWhatWouldNotMeanWhatItSays) {
  struct Case {
    std::string text;
    std::string field;
    std::string message;
  };
  const std::vector<Case> cases{
      {base() + tenant("a", "  apiKeys: [{name: ci, sha256: sk-live-1234}]\n"), "spec.apiKeys[0].sha256",
       "never the key itself"},
      {base() + tenant("a", std::string("  apiKeys: [{name: ci, sha256: ") + kHashA + "}]\n") +
           tenant("b", std::string("  apiKeys: [{name: ci, sha256: ") + kHashA + "}]\n"),
       "spec.apiKeys[0].sha256", "already given to a/ci"},
      {base("[{name: router}]") + policy("p", "  listeners: [public]\n"), "spec", "no authn filter"},
      {base("[{name: authn}, {name: router}]") + policy("p", "  routes: [chat]\n"), "spec", "no authz filter"},
      {base() + policy("p", "  listeners: [nope]\n"), "spec.listeners[0]", "not defined"},
      {base() + policy("p", "  listeners: [public]\n  rules: [{name: r, action: allow, tenants: [ghost]}]\n"),
       "spec.rules[0].tenants[0]", "tenant \"ghost\" is not defined"},
      {base() + policy("p", "  listeners: [public]\n  rules: [{name: r, action: maybe}]\n"), "spec.rules[0].action",
       "allow or deny"},
      {base() + policy("p", "  listeners: [public]\n  routingHeaders: [x-infermesh-route]\n"), "spec.routingHeaders[0]",
       "not a routing header"},
      {base() + policy("p", "  listeners: [public]\n  authentication:\n    jwtIssuers: [{issuer: i, jwksUri: \"http://x/jwks\"}]\n"),
       "spec.authentication.jwtIssuers[0].jwksUri", "https://"},
      {base() + tenant("a", "  jwt: [{issuer: https://idp.test}]\n") +
           policy("p", "  listeners: [public]\n  authentication:\n    jwtIssuers: [{issuer: \"https://idp.test\", jwksFile: /x}]\n"),
       "spec.jwt[0]", "needs claim and values"},
      {base() + tenant("a", "  dataClasses: [public]\n  defaultDataClass: pii\n"), "spec.defaultDataClass",
       "not one of the tenant's dataClasses"},
  };
  for (const auto& c : cases) {
    auto r = load(c.text);
    ASSERT_FALSE(r.snapshot) << c.message;
    bool found = false;
    for (const auto& e : r.errors) found = found || (e.field == c.field && e.message.find(c.message) != std::string::npos);
    EXPECT_TRUE(found) << "want " << c.field << ": " << c.message << "\ngot:\n" << joinErrors(r.errors);
    EXPECT_EQ(joinErrors(r.errors).find("sk-live-1234"), std::string::npos) << "a pasted key is never echoed";
  }
}

TEST(GovernanceCompilerTest, ConflictingIssuerDefinitionsAreAnError) {
  auto r = load(base() +
                policy("p1", "  listeners: [public]\n  authentication:\n    jwtIssuers: [{issuer: i, jwksFile: /a}]\n") +
                policy("p2", "  routes: [chat]\n  authentication:\n    jwtIssuers: [{issuer: i, jwksFile: /b}]\n"));
  ASSERT_FALSE(r.snapshot);
  EXPECT_NE(joinErrors(r.errors).find("also defined, differently, by Policy/p1"), std::string::npos) << joinErrors(r.errors);
}

TEST(GovernanceCompilerTest, NoTenantsOrPoliciesMeansNoGovernance) {
  auto r = load(base());
  ASSERT_TRUE(r.snapshot) << joinErrors(r.errors);
  EXPECT_EQ(r.snapshot->governance, nullptr);
}

}  // namespace
}  // namespace infermesh::config
