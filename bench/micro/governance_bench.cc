// What governance costs per request: the authn filter alone (an API key, a
// JWT of each algorithm) and authn + authz, run through the filter manager
// on a snapshot compiled from YAML with its runtime attached, as the proxy
// does. No sockets; the JWKS comes from a file.
#include <benchmark/benchmark.h>

#include "proxy/config/compiler.h"
#include "proxy/config/yaml_loader.h"
#include "proxy/filter/filter_manager.h"
#include "tests/support/jwt_signer.h"
#include "tests/support/process.h"

namespace infermesh::filter {
namespace {

using testing::KeyType;
using testing::SigningKey;


struct Fixture {
  testing::TempDir dir;
  SigningKey rsa = SigningKey::generate(KeyType::Rsa2048);
  SigningKey ec = SigningKey::generate(KeyType::EcP256);
  SigningKey ed = SigningKey::generate(KeyType::Ed25519);
  std::shared_ptr<const config::Snapshot> snap;
  std::string rs256, es256, eddsa;

  Fixture() {
    dir.write("jwks.json", testing::jwks({testing::publicJwk(rsa, "r"), testing::publicJwk(ec, "e"), testing::publicJwk(ed, "d")}));
    std::string y = "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\n"
                    "spec: {address: 127.0.0.1:0, filters: [{name: authn}, {name: authz}, {name: router}]}\n";
    auto doc = [&](const std::string& kind, const std::string& name, const std::string& spec) {
      y += "---\napiVersion: infermesh.io/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n";
    };
    doc("Model", "chat", "{capabilities: [chat], endpoints: [{address: '127.0.0.1:9', region: eu}]}");
    doc("Route", "v1", "{match: {pathPrefix: /v1/}}");
    // Ten tenants with a key each, and five rules, so lookups are not trivial.
    for (int i = 0; i < 10; ++i)
      doc("Tenant", "t" + std::to_string(i),
          "{apiKeys: [{name: k, sha256: " + testing::sha256Hex("key-" + std::to_string(i)) +
              "}], jwt: [{issuer: 'https://idp', claim: team, values: [t" + std::to_string(i) + "]}]}");
    doc("Policy", "p",
        "{listeners: [main], defaultAction: deny, authentication: {jwtIssuers: [{issuer: 'https://idp', audiences: [mesh], "
        "jwksFile: '" + dir.path() + "/jwks.json'}]}, rules: ["
        "{name: d1, action: deny, tenants: [t1], models: [chat]}, {name: d2, action: deny, dataClasses: [pii], regions: [us]},"
        "{name: a1, action: allow, tenants: [t2, t3]}, {name: a2, action: allow, tenants: [t4, t5, t6, t7]},"
        "{name: a3, action: allow, tenants: [t8, t9], capabilities: [chat]}]}");
    config::YamlLoader loader;
    loader.loadText(y, "bench.yaml");
    auto r = config::compile(loader.resources(), 1);
    if (!r.snapshot) throw std::runtime_error(config::joinErrors(r.errors));
    std::string error;
    if (!FilterRegistry::instance().prepare(*r.snapshot, error)) throw std::runtime_error(error);
    snap = r.snapshot;
    const std::string claims = R"({"iss":"https://idp","sub":"u","aud":"mesh","team":"t9","exp":9999999999})";
    rs256 = testing::makeJwt(rsa, "r", claims);
    es256 = testing::makeJwt(ec, "e", claims);
    eddsa = testing::makeJwt(ed, "d", claims);
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

// One request's headers through `names` (a prefix of the listener's chain).
void run(benchmark::State& state, const std::vector<std::string>& names, const std::string& credential) {
  auto& f = fixture();
  std::vector<std::shared_ptr<const FilterFactory>> factories;
  for (const auto& n : names) {
    std::string error;
    factories.push_back((*FilterRegistry::instance().find(n))("{}", error));
  }
  for (auto _ : state) {
    StreamContext ctx;
    ctx.snapshot = f.snap;
    ctx.listener = &f.snap->listeners[0];
    ctx.route = &f.snap->routes[0];
    ctx.target_model = &f.snap->models[0];
    ctx.request.method = "POST";
    ctx.request.target = "/v1/chat/completions";
    ctx.request.headers.add("authorization", "Bearer " + credential);
    std::vector<std::unique_ptr<StreamFilter>> chain;
    for (const auto& fa : factories) chain.push_back(fa->create());
    FilterManager fm(ctx, std::move(chain));
    benchmark::DoNotOptimize(fm.requestHeaders(true));
    if (ctx.local_reply) state.SkipWithError(ctx.local_reply->code.c_str());
  }
}

void BM_AuthnApiKey(benchmark::State& s) { run(s, {"authn"}, "key-9"); }
void BM_AuthnJwtRs256(benchmark::State& s) { run(s, {"authn"}, fixture().rs256); }
void BM_AuthnJwtEs256(benchmark::State& s) { run(s, {"authn"}, fixture().es256); }
void BM_AuthnJwtEdDsa(benchmark::State& s) { run(s, {"authn"}, fixture().eddsa); }
void BM_AuthnAuthzApiKey(benchmark::State& s) { run(s, {"authn", "authz"}, "key-9"); }
BENCHMARK(BM_AuthnApiKey);
BENCHMARK(BM_AuthnJwtRs256);
BENCHMARK(BM_AuthnJwtEs256);
BENCHMARK(BM_AuthnJwtEdDsa);
BENCHMARK(BM_AuthnAuthzApiKey);

}  // namespace
}  // namespace infermesh::filter
