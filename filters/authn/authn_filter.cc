// authn: establishes who the caller is, from an API key, a JWT or the mTLS
// client certificate, as the Policies on the request's listener and route
// ask (docs/governance.md). The result goes into the stream's Identity for
// authz and every later filter; the caller's credentials are removed so no
// model server ever receives them.
//
// It runs first in the chain: nothing about a request is worth deciding
// before its caller is known.
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <limits>
#include <unordered_map>
#include <optional>

#include "filters/authn/jwks_source.h"
#include "filters/authn/jwt.h"
#include "proxy/common/spiffe_id.h"
#include "proxy/config/snapshot.h"
#include "proxy/filter/filter.h"
#include "proxy/filter/identity.h"
#include "proxy/stats/filter_metrics.h"

namespace infermesh::authn {
namespace {

using filter::FilterStatus;
using filter::Identity;
using filter::StreamContext;

const std::uint32_t kRuntimeSlot = filter::nextRuntimeSlot();

// Key sources by issuer index (Governance::issuers), attached per snapshot.
struct AuthnRuntime {
  std::vector<std::shared_ptr<JwksSource>> jwks;
};

// Reasons a request is refused, each a label of infermesh_authn_denied_total.
constexpr const char* kReasons[] = {
    "missing_credentials", "invalid_api_key",    "method_not_allowed", "unknown_issuer",    "jwks_unavailable",
    "jwt_malformed",       "jwt_alg_not_allowed", "jwt_unknown_kid",   "jwt_key_mismatch",  "jwt_bad_signature",
    "jwt_expired",         "jwt_not_yet_valid",  "jwt_bad_issuer",     "jwt_bad_audience",
};

struct Config {
  stats::CounterMetric denied[std::size(kReasons)];
  stats::CounterMetric ok[3];  // api_key, jwt, mtls
  stats::CounterMetric anonymous;

  void deny(std::string_view reason) const {
    for (std::size_t i = 0; i < std::size(kReasons); ++i)
      if (reason == kReasons[i]) return denied[i].inc();
  }
};

std::shared_ptr<const filter::FilterFactory> build(std::string_view json, std::string& error);

bool prepare(const config::Snapshot& snap, std::string& error) {
  if (!snap.governance || snap.governance->issuers.empty()) return true;
  auto rt = std::make_shared<AuthnRuntime>();
  for (const auto& issuer : snap.governance->issuers) {
    JwksSpec spec;
    spec.file = issuer.jwks_file;
    spec.uri = issuer.jwks_uri;
    spec.ca_file = issuer.jwks_ca_file;
    spec.refresh = issuer.refresh;
    auto source = JwksSources::instance().get(spec);
    // A file is read at once; a URL gets a moment, then its keys arrive
    // off the request path (until then its tokens get 401 jwks_unavailable).
    if (!source->waitReady(std::chrono::seconds(spec.file.empty() ? 1 : 2)) && !spec.file.empty()) {
      error = "jwtIssuers \"" + issuer.issuer + "\": cannot load jwksFile " + spec.file + ": " + source->lastError();
      return false;
    }
    if (!source->keys()) spdlog::warn("JWKS of issuer {} not loaded yet: {}", issuer.issuer, source->lastError());
    rt->jwks.push_back(std::move(source));
  }
  if (snap.filter_runtime.size() <= kRuntimeSlot) snap.filter_runtime.resize(kRuntimeSlot + 1);
  snap.filter_runtime[kRuntimeSlot] = std::move(rt);
  return true;
}

const filter::Registration kRegistered{"authn", &build};
const filter::Registration kPrepared{filter::SnapshotPreparer{&prepare}};

// The digest is fetched once and each worker reuses its own context:
// OpenSSL 3's one-shot EVP_Digest looks the algorithm up on every call,
// which costs more than hashing a key.
std::optional<config::Sha256> sha256(std::string_view s) {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  thread_local const std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  config::Sha256 out{};
  unsigned int n = 0;
  if (EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 || EVP_DigestUpdate(ctx.get(), s.data(), s.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), out.data(), &n) != 1)
    return std::nullopt;
  return out;
}

// What the policies that apply to one request ask for, merged: a method is
// allowed only if every policy allows it, and credentials are required if
// any policy requires them.
struct Requirement {
  bool any = false;
  std::uint8_t methods = config::kApiKey | config::kJwt | config::kMtls;
  bool required = false;
  std::vector<const std::string*> key_headers;
  std::vector<std::uint32_t> issuers;
};

Requirement requirementFor(const config::Governance& g, const StreamContext& ctx, int route) {
  Requirement r;
  g.forEachPolicy(ctx.listener->index, route, [&](const config::PolicyConfig& p) {
    r.any = true;
    // A policy with no authentication section leaves the methods to others.
    if (p.sets_authentication) r.methods &= p.methods;
    r.required = r.required || p.required;
    for (const auto& h : p.api_key_headers)
      if (std::find_if(r.key_headers.begin(), r.key_headers.end(), [&](auto* x) { return *x == h; }) == r.key_headers.end())
        r.key_headers.push_back(&h);
    for (std::uint32_t i : p.issuers)
      if (std::find(r.issuers.begin(), r.issuers.end(), i) == r.issuers.end()) r.issuers.push_back(i);
  });
  return r;
}

bool looksLikeJwt(std::string_view t) { return std::count(t.begin(), t.end(), '.') == 2; }

class AuthnFilter final : public filter::StreamFilter {
 public:
  explicit AuthnFilter(const Config& config) : config_(config) {}

  FilterStatus onRequestHeaders(StreamContext& ctx, bool) override {
    const auto* g = ctx.snapshot->governance.get();
    const int route = ctx.route ? static_cast<int>(ctx.route - ctx.snapshot->routes.data()) : -1;
    Requirement req;
    if (g != nullptr) req = requirementFor(*g, ctx, route);
    // Taken out whatever happens next: the caller's credentials are for
    // this mesh, never for a model server.
    std::string bearer, key;
    takeCredentials(ctx, req, bearer, key);
    if (!req.any) return FilterStatus::Continue;

    auto& id = ctx.state.emplace(filter::kIdentity);
    std::string_view reason;
    if (!bearer.empty() && looksLikeJwt(bearer) && (req.methods & config::kJwt) && !req.issuers.empty()) {
      reason = fromJwt(ctx, *g, req, bearer, id);
    } else if (!bearer.empty() || !key.empty()) {
      const bool header_ok = !bearer.empty() ? hasHeader(req, "authorization") : true;
      if (!(req.methods & config::kApiKey) || !header_ok) reason = "method_not_allowed";
      else reason = fromApiKey(*g, bearer.empty() ? key : bearer, id);
    } else if (!ctx.peer_identity.empty() && (req.methods & config::kMtls)) {
      fromPeer(*g, ctx.peer_identity, id);
    } else if (req.required) {
      reason = "missing_credentials";
    } else {
      config_.anonymous.inc();
    }
    if (reason.empty()) {
      if (id.method != Identity::Method::None) config_.ok[static_cast<int>(id.method) - 1].inc();
      return FilterStatus::Continue;
    }
    id.failure = std::string(reason);
    config_.deny(reason);
    filter::LocalReply reply;
    reply.status = 401;
    reply.type = "authentication_error";
    reply.code = std::string(reason);
    reply.message = message(reason);
    // RFC 6750: a request without credentials gets the bare challenge.
    reply.extra_headers.emplace_back(
        "www-authenticate", reason == "missing_credentials"
                                ? std::string("Bearer realm=\"infermesh\"")
                                : "Bearer realm=\"infermesh\", error=\"invalid_token\", error_description=\"" +
                                      std::string(reason) + "\"");
    ctx.sendLocalReply(std::move(reply));
    return FilterStatus::Stop;
  }

 private:
  static bool hasHeader(const Requirement& req, std::string_view name) {
    for (const auto* h : req.key_headers)
      if (*h == name) return true;
    return false;
  }

  static std::string message(std::string_view reason) {
    if (reason == "missing_credentials") return "this endpoint needs an API key, a bearer token or a client certificate";
    if (reason == "invalid_api_key") return "the API key is not valid";
    if (reason == "method_not_allowed") return "this kind of credential is not accepted here";
    if (reason == "unknown_issuer") return "the token's issuer is not accepted here";
    if (reason == "jwks_unavailable") return "the token's signing keys are not available; try again later";
    return "the bearer token is not valid (" + std::string(reason) + ")";
  }

  // Removes every credential header and returns the one to check: a bearer
  // token from Authorization, or an API key from another configured header.
  static void takeCredentials(StreamContext& ctx, const Requirement& req, std::string& bearer, std::string& key) {
    auto& headers = ctx.request.headers;
    if (auto auth = headers.get("authorization")) {
      constexpr std::string_view kScheme = "bearer ";
      if (auth->size() > kScheme.size() && filter::equalsIgnoreCase(auth->substr(0, kScheme.size()), kScheme)) {
        std::string_view token = auth->substr(kScheme.size());
        while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
        bearer = std::string(token);
      }
    }
    for (const auto* h : req.key_headers) {
      if (*h == "authorization") continue;
      if (auto v = headers.get(*h); v && key.empty()) key = std::string(*v);
      headers.remove(*h);
    }
    headers.remove("authorization");
    headers.remove("x-api-key");
  }

  std::string_view fromApiKey(const config::Governance& g, std::string_view presented, Identity& id) const {
    const auto digest = sha256(presented);
    if (!digest) return "invalid_api_key";
    const auto& hash = *digest;
    // The bucket narrows by hash bits an attacker cannot aim at; the whole
    // hash is then compared in constant time.
    auto [it, end] = g.api_key_index.equal_range(config::Governance::bucketOf(hash));
    for (; it != end; ++it) {
      const auto& entry = g.api_keys[it->second];
      if (CRYPTO_memcmp(entry.hash.data(), hash.data(), hash.size()) == 0) {
        id.method = Identity::Method::ApiKey;
        id.tenant = entry.tenant;
        id.principal = entry.principal;
        return {};
      }
    }
    return "invalid_api_key";
  }

  // Tokens this worker verified, so a client reusing one pays for the
  // signature once (43-220 us of CPU, bench/RESULTS.md) rather than per
  // request. An entry holds only while the config, the issuer's key set
  // and the token's time window are the ones it was checked against.
  struct VerifiedToken {
    std::uint64_t config_version = 0;     // the tenant pointer below belongs to it
    std::shared_ptr<const JwkSet> keys;  // held, so a new set never reuses its address
    std::uint32_t issuer = 0;
    std::int64_t not_before = 0;  // skew applied
    std::int64_t not_after = 0;
    std::string principal;
    const config::TenantConfig* tenant = nullptr;
  };
  static constexpr std::size_t kVerifiedTokens = 1024;
  // Looked up by the token as received (a view): no copy on a hit.
  using TokenCache = std::unordered_map<std::string, VerifiedToken, config::StringHash, std::equal_to<>>;
  static TokenCache& verifiedTokens() {
    thread_local TokenCache cache;
    return cache;
  }

  std::string_view fromJwt(StreamContext& ctx, const config::Governance& g, const Requirement& req,
                           std::string_view compact, Identity& id) const {
    const auto* rt = static_cast<const AuthnRuntime*>(ctx.snapshot->runtime(kRuntimeSlot));
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
    auto& cache = verifiedTokens();
    if (auto it = cache.find(compact); it != cache.end()) {
      const auto& v = it->second;
      const bool issuer_allowed = std::find(req.issuers.begin(), req.issuers.end(), v.issuer) != req.issuers.end();
      if (v.config_version == ctx.snapshot->version && issuer_allowed && rt != nullptr && v.issuer < rt->jwks.size() &&
          rt->jwks[v.issuer]->keys() == v.keys && now >= v.not_before && now <= v.not_after) {
        id.method = Identity::Method::Jwt;
        id.principal = v.principal;
        id.tenant = v.tenant;
        return {};
      }
      cache.erase(it);
    }
    JwtToken token;
    if (auto e = parseJwt(compact, token); e != JwtError::None) return reasonCode(e);
    int issuer = -1;
    for (std::uint32_t i : req.issuers)
      if (g.issuers[i].issuer == token.issuer) issuer = static_cast<int>(i);
    if (issuer < 0) return "unknown_issuer";
    const auto& ic = g.issuers[static_cast<std::size_t>(issuer)];
    if (rt == nullptr || static_cast<std::size_t>(issuer) >= rt->jwks.size()) return "jwks_unavailable";
    auto& source = *rt->jwks[static_cast<std::size_t>(issuer)];
    const auto keys = source.keys();
    if (!keys) return "jwks_unavailable";
    JwtRequirements want;
    want.issuer = ic.issuer;
    want.audiences = ic.audiences;
    want.clock_skew = ic.clock_skew;
    const JwtError e = verifyJwt(token, *keys, want, now);
    if (e == JwtError::UnknownKid) source.onUnknownKid();  // keys may have rotated
    if (e != JwtError::None) return reasonCode(e);
    id.method = Identity::Method::Jwt;
    id.principal = token.issuer + "#" + token.subject;
    for (const auto& m : ic.tenants) {
      bool match = false;
      if (!m.claim.empty())
        for (const auto& [name, value] : token.claims)
          if (name == m.claim)
            for (const auto& v : m.values) match = match || value == v;
      for (const auto& prefix : m.subject_prefixes) match = match || token.subject.rfind(prefix, 0) == 0;
      if (match) {
        id.tenant = m.tenant;
        break;
      }
    }
    if (cache.size() >= kVerifiedTokens) cache.clear();  // bounded; refilled by the tokens in use
    const std::int64_t skew = ic.clock_skew.count();
    cache.emplace(std::string(compact),
                  VerifiedToken{ctx.snapshot->version, keys, static_cast<std::uint32_t>(issuer),
                                token.nbf ? *token.nbf - skew : std::numeric_limits<std::int64_t>::min(),
                                token.exp ? *token.exp + skew : std::numeric_limits<std::int64_t>::max(), id.principal,
                                id.tenant});
    return {};
  }

  static void fromPeer(const config::Governance& g, std::string_view spiffe_id, Identity& id) {
    id.method = Identity::Method::Mtls;
    id.principal = std::string(spiffe_id);
    for (const auto& m : g.spiffe)
      if (common::spiffeIdMatches(spiffe_id, m.id)) {
        id.tenant = m.tenant;
        return;
      }
  }

  const Config& config_;
};

class AuthnFactory final : public filter::FilterFactory {
 public:
  AuthnFactory() {
    auto& metrics = stats::FilterMetrics::instance();
    for (std::size_t i = 0; i < std::size(kReasons); ++i)
      config_.denied[i] = metrics.counter("infermesh_authn_denied_total",
                                          "Requests refused by authn (401), by reason", {{"reason", kReasons[i]}});
    const char* methods[] = {"api_key", "jwt", "mtls"};
    for (int i = 0; i < 3; ++i)
      config_.ok[i] = metrics.counter("infermesh_authn_authenticated_total",
                                      "Requests whose caller authn established, by method", {{"method", methods[i]}});
    config_.anonymous = metrics.counter("infermesh_authn_authenticated_total",
                                        "Requests whose caller authn established, by method", {{"method", "none"}});
  }
  std::unique_ptr<filter::StreamFilter> create() const override { return std::make_unique<AuthnFilter>(config_); }

 private:
  Config config_;
};

std::shared_ptr<const filter::FilterFactory> build(std::string_view json, std::string& error) {
  if (!json.empty() && json != "{}") {
    error = "authn takes no config: its settings are Policy resources";
    return nullptr;
  }
  return std::make_shared<AuthnFactory>();
}

}  // namespace
}  // namespace infermesh::authn
