// Identity, tenants and policies end to end: API keys, JWTs signed at test
// time against a JWKS server on loopback that rotates keys, mTLS identities,
// deny-before-allow, dry run, residency, the routing-header bypass, the
// per-caller model list, credentials never reaching a model server, a
// model's own upstream credential, and the audit chain checked by
// infermeshctl.

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tests/integration/proxy_fixture.h"
#include "tests/support/jwks_server.h"
#include "tests/support/jwt_signer.h"
#include "tests/support/recording_upstream.h"
#include "tests/support/test_certs.h"

namespace infermesh::testing {
namespace {

constexpr const char* kKeyA = "sk-team-a-0123456789";
constexpr const char* kKeyB = "sk-team-b-0123456789";
constexpr const char* kIssuer = "https://idp.test";


std::int64_t nowUnix() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

class GovernanceTest : public ProxyTest {
 protected:
  RecordingUpstream eu, us;
  JwksServer idp;
  SigningKey rsa = SigningKey::generate(KeyType::Rsa2048);
  SigningKey ec = SigningKey::generate(KeyType::EcP256);
  SigningKey ed = SigningKey::generate(KeyType::Ed25519);
  std::string pki;
  int tls_port = 0;

  void SetUp() override {
    idp.setBody(jwks({publicJwk(rsa, "r1"), publicJwk(ec, "e1"), publicJwk(ed, "d1")}));
    pki = dir.path() + "/pki";
    std::filesystem::create_directories(pki);
    makeCa(pki, "ca");
    makeCert(pki, "ca", {"server", "localhost", {"localhost"}, {"127.0.0.1"}, {}});
    makeCert(pki, "ca", {"team-c", "app", {}, {}, {"spiffe://mesh.test/ns/c/sa/app"}});
    makeCert(pki, "ca", {"stranger", "app", {}, {}, {"spiffe://mesh.test/ns/z/sa/app"}});
    dir.write("provider.key", "sk-provider-1\n");
    std::ostringstream y;
    const std::string chain = "[{name: authn}, {name: authz}, {name: router}]";
    y << "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec:\n"
      << "  address: 127.0.0.1:0\n  filters: " << chain << "\n"
      << "  clientHeaders: [x-infermesh-capability]\n"
      << "  auditLog: {path: " << dir.path() << "/audit.log}\n"
      << "---\napiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: mesh}\nspec:\n"
      << "  address: 127.0.0.1:0\n  filters: " << chain << "\n"
      << "  tls: {certificates: [{certFile: " << pki << "/server.crt, keyFile: " << pki << "/server.key}], clientCaFile: "
      << pki << "/ca.crt}\n"
      << doc("Model", "chat", "{capabilities: [chat], endpoints: [{address: '" + eu.address() + "', region: eu}, {address: '" +
                                  us.address() + "', region: us}]}")
      << doc("Model", "embed", "{capabilities: [embeddings], endpoints: [{address: '" + us.address() + "', region: us}]}")
      << doc("Model", "premium", "{capabilities: [chat], endpoints: [{address: '" + eu.address() +
                                     "', region: eu}], upstreamCredential: {header: authorization, prefix: 'Bearer ', valueFile: " +
                                     dir.path() + "/provider.key}}")
      << doc("Route", "v1", "{match: {pathPrefix: /v1/}, autoSelect: {capabilities: [chat, embeddings]}}")
      << doc("Tenant", "team-a", "{apiKeys: [{name: ci, sha256: " + sha256Hex(kKeyA) + "}], jwt: [{issuer: '" + kIssuer +
                                     "', claim: team, values: [a]}]}")
      << doc("Tenant", "team-b", "{apiKeys: [{name: ci, sha256: " + sha256Hex(kKeyB) +
                                     "}], dataClasses: [pii, internal], defaultDataClass: pii}")
      << doc("Tenant", "team-c", "{spiffeIds: ['spiffe://mesh.test/ns/c/']}")
      << doc("Policy", "main",
             "{listeners: [main, mesh], defaultAction: deny,"
             " authentication: {jwtIssuers: [{issuer: '" + std::string(kIssuer) + "', audiences: [infermesh], jwksUri: '" +
                 idp.url() + "', jwksCaFile: '" + idp.caFile() + "'}]},"
             " rules: [{name: a-any, action: allow, tenants: [team-a]},"
             "         {name: b-models, action: allow, tenants: [team-b], capabilities: [chat, embeddings]},"
             "         {name: c-chat, action: allow, tenants: [team-c], models: [chat]},"
             "         {name: no-premium-b, action: deny, tenants: [team-b], models: [premium]},"
             "         {name: pii-eu, action: deny, dataClasses: [pii], regions: [us]}]}")
      << doc("Policy", "watch",
             "{listeners: [main], mode: dry_run, rules: [{name: no-embed-a, action: deny, tenants: [team-a], models: [embed]}]}");
    startProxy(y.str());
    tls_port = portOf(proxy->waitForLine("listener mesh "));
  }

  HttpResponse call(const std::string& model, std::map<std::string, std::string> headers) {
    headers.emplace("content-type", "application/json");
    return httpRequest(port, "POST", "/v1/chat/completions", chatBody(model, false), headers);
  }
  HttpResponse withKey(const std::string& model, const std::string& key) {
    return call(model, {{"authorization", "Bearer " + key}});
  }
  std::string token(const SigningKey& key, const std::string& kid, const std::string& team, std::int64_t exp_in = 300,
                    const std::string& aud = "infermesh") {
    const auto now = nowUnix();
    return makeJwt(key, kid,
                   "{\"iss\":\"" + std::string(kIssuer) + "\",\"sub\":\"user-1\",\"aud\":\"" + aud + "\",\"team\":\"" + team +
                       "\",\"iat\":" + std::to_string(now) + ",\"exp\":" + std::to_string(now + exp_in) + "}");
  }
  std::string curlMesh(const std::string& cert, const std::string& model) {
    return runCommand("curl -sS --max-time 10 --cacert " + pki + "/ca.crt --cert " + pki + "/" + cert + ".crt --key " + pki +
                      "/" + cert + ".key -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d '" +
                      chatBody(model, false) + "' https://localhost:" + std::to_string(tls_port) + "/v1/chat/completions" +
                      " --resolve localhost:" + std::to_string(tls_port) + ":127.0.0.1")
        .out;
  }
  std::vector<std::string> auditLines(std::size_t at_least) {
    std::vector<std::string> lines;
    eventually([&] {
      lines.clear();
      std::ifstream in(dir.path() + "/audit.log");
      for (std::string l; std::getline(in, l);) lines.push_back(l);
      return lines.size() >= at_least;
    });
    return lines;
  }
};

TEST_F(GovernanceTest, ApiKeysIdentifyTenantsAndNeverReachTheModel) {
  auto r = withKey("chat", kKeyA);
  ASSERT_EQ(r.status, 200) << r.body;
  r = call("chat", {{"x-api-key", kKeyB}});
  ASSERT_EQ(r.status, 200) << r.body;
  const auto got = eu.received() + us.received();
  EXPECT_EQ(got, 2u);
  for (auto* up : {&eu, &us})
    for (const auto& req : up->waitFor(up->received()))
      EXPECT_EQ(req.header("authorization") + req.header("x-api-key"), "") << req.head;

  r = call("chat", {});
  EXPECT_EQ(r.status, 401);
  EXPECT_TRUE(hasCode(r, "missing_credentials")) << r.body;
  EXPECT_EQ(r.headers["www-authenticate"], "Bearer realm=\"infermesh\"");
  r = withKey("chat", "sk-guess");
  EXPECT_EQ(r.status, 401);
  EXPECT_TRUE(hasCode(r, "invalid_api_key")) << r.body;
  EXPECT_NE(r.headers["www-authenticate"].find("invalid_token"), std::string::npos);
  EXPECT_EQ(eu.received() + us.received(), got) << "refused requests never reach a model";
  EXPECT_EQ(metric("infermesh_authn_denied_total", "reason=\"invalid_api_key\""), 1);
  EXPECT_EQ(metric("infermesh_authn_authenticated_total", "method=\"api_key\""), 2);
  // The key appears nowhere the proxy writes.
  EXPECT_EQ(runCommand("grep -rl " + std::string(kKeyA) + " " + dir.path()).out, "");
}

TEST_F(GovernanceTest, JwtsFromARotatingJwksAndEveryRefusal) {
  const std::string first = token(rsa, "r1", "a");
  for (auto* key : {&rsa, &ec, &ed}) {
    const std::string kid = key == &rsa ? "r1" : key == &ec ? "e1" : "d1";
    auto r = withKey("embed", key == &rsa ? first : token(*key, kid, "a"));
    EXPECT_EQ(r.status, 200) << kid << ": " << r.body;
  }
  EXPECT_EQ(withKey("embed", first).status, 200);  // again, from the worker's verified tokens
  struct Bad {
    std::string token;
    const char* code;
  };
  const auto now = nowUnix();
  const std::string claims = "{\"iss\":\"" + std::string(kIssuer) + "\",\"sub\":\"u\",\"aud\":\"infermesh\",\"team\":\"a\",\"exp\":" +
                             std::to_string(now + 300) + "}";
  const std::vector<Bad> bad{
      {unsignedJwt(claims), "jwt_alg_not_allowed"},
      {hs256Jwt(rsa.publicPem(), R"({"alg":"HS256","typ":"JWT","kid":"r1"})", claims), "jwt_alg_not_allowed"},
      {withFlippedSignatureByte(token(rsa, "r1", "a")), "jwt_bad_signature"},
      {withPayload(token(rsa, "r1", "a"), R"({"iss":"https://idp.test","sub":"root","team":"a"})"), "jwt_bad_signature"},
      {token(rsa, "r1", "a", -600), "jwt_expired"},
      {token(rsa, "r1", "a", 300, "someone-else"), "jwt_bad_audience"},
      {makeJwt(rsa, "r1", R"({"iss":"https://evil.test","sub":"u","aud":"infermesh","exp":9999999999})"), "unknown_issuer"},
      {token(ec, "r1", "a"), "jwt_key_mismatch"},
      {makeJwt(rsa, "r1", "{\"iss\":\"" + std::string(kIssuer) + "\",\"sub\":\"u\",\"aud\":\"infermesh\",\"nbf\":" +
                              std::to_string(now + 600) + ",\"exp\":" + std::to_string(now + 900) + "}"),
       "jwt_not_yet_valid"},
  };
  for (const auto& b : bad) {
    auto r = withKey("chat", b.token);
    EXPECT_EQ(r.status, 401) << b.code << ": " << r.body;
    EXPECT_TRUE(hasCode(r, b.code)) << b.code << ": " << r.body;
  }
  // Rotation: a new key appears at the issuer; the first token signed with
  // it sends the proxy back for the keys, off the request path.
  const auto fetches = idp.requests();
  SigningKey next = SigningKey::generate(KeyType::EcP256);
  idp.setBody(jwks({publicJwk(next, "e2")}));
  const std::string rotated = token(next, "e2", "a");
  EXPECT_TRUE(eventually([&] { return withKey("chat", rotated).status == 200; }));
  EXPECT_GT(idp.requests(), fetches);
  // r1 left the issuer's keys: a token verified with it no longer passes.
  EXPECT_EQ(withKey("chat", first).status, 401);
  // The issuer failing keeps the last good keys.
  idp.setMode(JwksServer::Mode::Fail500);
  auto unknown = withKey("chat", token(next, "unknown", "a"));
  EXPECT_EQ(unknown.status, 401);
  EXPECT_TRUE(hasCode(unknown, "jwt_unknown_kid")) << unknown.body;
  EXPECT_EQ(withKey("chat", rotated).status, 200);
}

TEST_F(GovernanceTest, MtlsIdentityMapsToItsTenant) {
  EXPECT_EQ(curlMesh("team-c", "chat"), "200");
  EXPECT_EQ(curlMesh("team-c", "premium"), "403");   // team-c may use chat only
  EXPECT_EQ(curlMesh("stranger", "chat"), "403");    // known CA, no tenant: default deny
}

TEST_F(GovernanceTest, PoliciesDenyBeforeAllowAcrossTenantsAndRegions) {
  // team-b may use chat models, but the explicit deny on premium wins.
  auto r = withKey("premium", kKeyB);
  EXPECT_EQ(r.status, 403);
  EXPECT_TRUE(hasCode(r, "policy_denied")) << r.body;
  EXPECT_NE(r.body.find("no-premium-b"), std::string::npos) << r.body;
  EXPECT_EQ(r.headers["x-infermesh-policy"], "main/no-premium-b");
  EXPECT_EQ(metric("infermesh_authz_denied_total", "policy=\"main\",rule=\"no-premium-b\""), 1);
  // team-b sends pii by default: its chat goes to eu only, never spilling to us.
  for (int i = 0; i < 6; ++i) ASSERT_EQ(withKey("chat", kKeyB).status, 200);
  EXPECT_EQ(us.received(), 0u);
  EXPECT_EQ(eu.received(), 6u);
  // embed runs only in us: refused rather than sent there.
  r = withKey("embed", kKeyB);
  EXPECT_EQ(r.status, 403);
  EXPECT_TRUE(hasCode(r, "no_allowed_region")) << r.body;
  // A header cannot lower the data class: team-b is not trusted to set it.
  r = call("embed", {{"authorization", std::string("Bearer ") + kKeyB}, {"x-infermesh-data-class", "internal"}});
  EXPECT_EQ(r.status, 403);
  // team-a may use everything; the dry-run policy counts what it would refuse.
  EXPECT_EQ(withKey("embed", kKeyA).status, 200);
  EXPECT_EQ(metric("infermesh_authz_dry_run_denied_total", "policy=\"watch\",rule=\"no-embed-a\""), 1);
}

TEST_F(GovernanceTest, RoutingHeadersAreHonouredOnlyWherePolicyAllows) {
  auto r = call("auto", {{"authorization", std::string("Bearer ") + kKeyA}, {"x-infermesh-capability", "embeddings"}});
  EXPECT_EQ(r.status, 403);
  EXPECT_TRUE(hasCode(r, "routing_header_not_allowed")) << r.body;
  EXPECT_EQ(eu.received() + us.received(), 0u);
}

TEST_F(GovernanceTest, ModelListShowsWhatTheCallerMayUse) {
  auto ids = [](const std::string& body) {
    std::string out;
    for (std::size_t at = 0; (at = body.find("\"id\":\"", at)) != std::string::npos;) {
      at += 6;
      out += body.substr(at, body.find('"', at) - at) + ",";
    }
    return out;
  };
  auto r = httpRequest(port, "GET", "/v1/models", "", {{"authorization", std::string("Bearer ") + kKeyA}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find("\"object\":\"list\""), std::string::npos);
  EXPECT_EQ(ids(r.body), "chat,embed,premium,");
  r = httpRequest(port, "GET", "/v1/models", "", {{"authorization", std::string("Bearer ") + kKeyB}});
  EXPECT_EQ(ids(r.body), "chat,") << "premium is denied, embed has no endpoint in a region pii may go";
  EXPECT_EQ(httpRequest(port, "GET", "/v1/models").status, 401);
}

TEST_F(GovernanceTest, AModelsOwnCredentialIsAddedAndFollowsItsFile) {
  ASSERT_EQ(withKey("premium", kKeyA).status, 200);
  auto reqs = eu.waitFor(1);
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].header("authorization"), "Bearer sk-provider-1");
  EXPECT_EQ(reqs[0].count("authorization"), 1);
  dir.write("provider.key.tmp", "sk-provider-2\n");
  ASSERT_EQ(std::rename((dir.path() + "/provider.key.tmp").c_str(), (dir.path() + "/provider.key").c_str()), 0);
  EXPECT_TRUE(eventually([&] {
    if (withKey("premium", kKeyA).status != 200) return false;
    return eu.waitFor(eu.received()).back().header("authorization") == "Bearer sk-provider-2";
  }));
}

TEST_F(GovernanceTest, EveryDecisionIsAuditedInAVerifiableChain) {
  ASSERT_EQ(withKey("chat", kKeyA).status, 200);
  ASSERT_EQ(withKey("premium", kKeyB).status, 403);
  ASSERT_EQ(withKey("chat", "sk-wrong").status, 401);
  ASSERT_EQ(withKey("embed", kKeyA).status, 200);
  const auto lines = auditLines(4);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_NE(lines[0].find("\"tenant\":\"team-a\""), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("\"decision\":\"allow\""), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("\"served_model\":\"chat\""), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("\"principal\":\"team-a/ci\""), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("\"decision\":\"deny\""), std::string::npos) << lines[1];
  EXPECT_NE(lines[1].find("\"rule\":\"no-premium-b\""), std::string::npos) << lines[1];
  EXPECT_NE(lines[1].find("\"policy_version\":\""), std::string::npos) << lines[1];
  EXPECT_NE(lines[2].find("\"decision\":\"unauthenticated\""), std::string::npos) << lines[2];
  EXPECT_NE(lines[2].find("\"reason\":\"invalid_api_key\""), std::string::npos) << lines[2];
  EXPECT_NE(lines[3].find("\"decision\":\"dry_run_deny\""), std::string::npos) << lines[3];
  EXPECT_EQ(lines[2].find("sk-wrong"), std::string::npos) << "no credential in the audit log";

  const std::string ctl = bin_dir + "/controlplane/infermeshctl";
  auto v = runCommand(ctl + " audit verify " + dir.path() + "/audit.log 2>&1");
  EXPECT_EQ(v.status, 0) << v.out;
  EXPECT_NE(v.out.find("ok: 4 records"), std::string::npos) << v.out;
  // Edit the deny into an allow: the record after it no longer chains.
  std::string text;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    std::string l = lines[i];
    if (i == 1) l.replace(l.find("\"decision\":\"deny\""), 17, "\"decision\":\"allo\"");
    text += l + "\n";
  }
  dir.write("tampered.log", text);
  v = runCommand(ctl + " audit verify " + dir.path() + "/tampered.log 2>&1");
  EXPECT_EQ(v.status, 1) << v.out;
  EXPECT_NE(v.out.find("line 3"), std::string::npos) << v.out;
}

}  // namespace
}  // namespace infermesh::testing
