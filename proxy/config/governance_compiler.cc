#include "proxy/config/governance_compiler.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <map>

#include "proxy/common/spiffe_id.h"

namespace infermesh::config {
namespace {

namespace pb = google::protobuf;

std::string at(const std::string& field, int i) { return field + "[" + std::to_string(i) + "]"; }

bool parseSha256Hex(std::string_view hex, Sha256& out) {
  if (hex.size() != 64) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < 32; ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<unsigned char>(hi << 4 | lo);
  }
  return true;
}

std::chrono::milliseconds toMillis(const pb::Duration& d) {
  return std::chrono::milliseconds(pb::util::TimeUtil::DurationToMilliseconds(d));
}

class GovernanceCompiler {
 public:
  GovernanceCompiler(const Resources& r, Snapshot& snap, ConfigErrors& errors) : r_(r), snap_(snap), errors_(errors) {}

  std::shared_ptr<const Governance> run() {
    if (r_.tenants.empty() && r_.policies.empty()) return nullptr;
    auto g = std::make_shared<Governance>();
    g_ = g.get();
    g->tenants.reserve(r_.tenants.size());  // pointers into it are handed out below
    for (const auto& t : r_.tenants) tenantHead(t);
    for (const auto& p : r_.policies) issuers(p);
    for (std::size_t i = 0; i < r_.tenants.size(); ++i) tenantIdentities(r_.tenants[i], g->tenants[i]);
    g->by_listener.resize(snap_.listeners.size());
    g->by_route.resize(snap_.routes.size());
    for (const auto& p : r_.policies) policy(p);
    enforcedWhereAttached();
    return g;
  }

 private:
  void tenantHead(const Resource<v1::Tenant>& t) {
    if (g_->findTenant(t.name) != nullptr) errors_.push_back(t.error("metadata.name", "duplicate Tenant name"));
    TenantConfig tc;
    tc.name = t.name;
    tc.index = static_cast<std::uint32_t>(g_->tenants.size());
    tc.data_classes.assign(t.spec.data_classes().begin(), t.spec.data_classes().end());
    for (int i = 0; i < t.spec.data_classes_size(); ++i)
      if (t.spec.data_classes(i).empty()) errors_.push_back(t.error(at("spec.dataClasses", i), "must not be empty"));
    if (!t.spec.default_data_class().empty()) tc.default_data_class = t.spec.default_data_class();
    else if (!tc.data_classes.empty()) tc.default_data_class = tc.data_classes.front();
    if (!tc.maySend(tc.default_data_class))
      errors_.push_back(t.error("spec.defaultDataClass", "\"" + tc.default_data_class +
                                                             "\" is not one of the tenant's dataClasses"));
    const auto& scope = t.spec.cache_scope();
    if (scope == "none") tc.cache_scope = CacheScope::None;
    else if (!scope.empty() && scope != "tenant")
      errors_.push_back(t.error("spec.cacheScope", "must be tenant or none"));
    g_->tenants.push_back(std::move(tc));
  }

  void tenantIdentities(const Resource<v1::Tenant>& t, const TenantConfig& tc) {
    const auto& spec = t.spec;
    for (int i = 0; i < spec.api_keys_size(); ++i) {
      const auto& k = spec.api_keys(i);
      const std::string path = at("spec.apiKeys", i);
      ApiKeyEntry e;
      e.tenant = &tc;
      e.name = k.name();
      e.principal = tc.name + "/" + k.name();
      if (k.name().empty()) errors_.push_back(t.error(path + ".name", "is required (it names the key in logs)"));
      if (!parseSha256Hex(k.sha256(), e.hash)) {
        // Never echo the value: it may be a key pasted by mistake.
        errors_.push_back(t.error(path + ".sha256", "must be the key's SHA-256 as 64 lowercase hex digits "
                                                    "(sha256sum of the key), never the key itself"));
        continue;
      }
      for (const auto& other : g_->api_keys) {
        if (other.hash == e.hash)
          errors_.push_back(t.error(path + ".sha256", "the same key is already given to " + other.principal));
        else if (other.tenant == &tc && other.name == e.name)
          errors_.push_back(t.error(path + ".name", "duplicate key name \"" + e.name + "\""));
      }
      g_->api_key_index.emplace(Governance::bucketOf(e.hash), static_cast<std::uint32_t>(g_->api_keys.size()));
      g_->api_keys.push_back(std::move(e));
    }
    for (int i = 0; i < spec.jwt_size(); ++i) {
      const auto& j = spec.jwt(i);
      const std::string path = at("spec.jwt", i);
      auto* issuer = const_cast<JwtIssuerConfig*>(g_->findIssuer(j.issuer()));
      if (j.issuer().empty()) {
        errors_.push_back(t.error(path + ".issuer", "is required"));
        continue;
      }
      if (issuer == nullptr) {
        dangling(t.error(path + ".issuer", "issuer \"" + j.issuer() + "\" is not in any Policy's jwtIssuers"));
        continue;
      }
      JwtTenantMapping m;
      m.tenant = &tc;
      m.claim = j.claim();
      m.values.assign(j.values().begin(), j.values().end());
      m.subject_prefixes.assign(j.subject_prefixes().begin(), j.subject_prefixes().end());
      if (m.claim.empty() != m.values.empty())
        errors_.push_back(t.error(path + ".claim", "claim and values go together"));
      if (m.claim.empty() && m.subject_prefixes.empty())
        errors_.push_back(t.error(path, "needs claim and values, or subjectPrefixes: else every token of the "
                                        "issuer would be this tenant's"));
      for (int k = 0; k < j.subject_prefixes_size(); ++k)
        if (j.subject_prefixes(k).empty())
          errors_.push_back(t.error(at(path + ".subjectPrefixes", k), "must not be empty"));
      issuer->tenants.push_back(std::move(m));
    }
    for (int i = 0; i < spec.spiffe_ids_size(); ++i) {
      const std::string& id = spec.spiffe_ids(i);
      const std::string path = at("spec.spiffeIds", i);
      if (auto why = common::spiffePatternError(id); !why.empty()) {
        errors_.push_back(t.error(path, why));
        continue;
      }
      for (const auto& other : g_->spiffe)
        if (other.id == id) errors_.push_back(t.error(path, "already maps to Tenant/" + other.tenant->name));
      g_->spiffe.push_back(SpiffeTenantMapping{id, &tc});
    }
  }

  void issuers(const Resource<v1::Policy>& p) {
    const auto& a = p.spec.authentication();
    for (int i = 0; i < a.jwt_issuers_size(); ++i) {
      const auto& j = a.jwt_issuers(i);
      const std::string path = at("spec.authentication.jwtIssuers", i);
      JwtIssuerConfig ic;
      ic.issuer = j.issuer();
      ic.audiences.assign(j.audiences().begin(), j.audiences().end());
      ic.jwks_file = j.jwks_file();
      ic.jwks_uri = j.jwks_uri();
      ic.jwks_ca_file = j.jwks_ca_file();
      ic.defined_by = p.document();
      if (ic.issuer.empty()) errors_.push_back(p.error(path + ".issuer", "is required"));
      if (ic.jwks_file.empty() == ic.jwks_uri.empty())
        errors_.push_back(p.error(path, "give jwksFile or jwksUri (one of them)"));
      if (!ic.jwks_uri.empty() && ic.jwks_uri.rfind("https://", 0) != 0)
        errors_.push_back(p.error(path + ".jwksUri", "must be an https:// URL"));
      if (!ic.jwks_ca_file.empty() && ic.jwks_uri.empty())
        errors_.push_back(p.error(path + ".jwksCaFile", "only applies to jwksUri"));
      if (j.has_refresh_interval()) {
        ic.refresh = toMillis(j.refresh_interval());
        if (ic.refresh < std::chrono::seconds(1))
          errors_.push_back(p.error(path + ".refreshInterval", "must be at least 1s"));
      }
      if (j.has_clock_skew()) {
        const auto ms = toMillis(j.clock_skew());
        if (ms.count() < 0 || ms > std::chrono::minutes(10))
          errors_.push_back(p.error(path + ".clockSkew", "must be 0s..10m"));
        ic.clock_skew = std::chrono::duration_cast<std::chrono::seconds>(ms);
      }
      if (const auto* same = g_->findIssuer(ic.issuer)) {
        const bool equal = same->audiences == ic.audiences && same->jwks_file == ic.jwks_file &&
                           same->jwks_uri == ic.jwks_uri && same->jwks_ca_file == ic.jwks_ca_file &&
                           same->refresh == ic.refresh && same->clock_skew == ic.clock_skew;
        if (!equal)
          errors_.push_back(p.error(path, "issuer \"" + ic.issuer + "\" is also defined, differently, by " +
                                              same->defined_by));
        continue;
      }
      g_->issuers.push_back(std::move(ic));
    }
  }

  const TenantConfig* tenantRef(const Resource<v1::Policy>& p, const std::string& path, const std::string& name) {
    const auto* t = g_->findTenant(name);
    if (t == nullptr) dangling(p.error(path, "tenant \"" + name + "\" is not defined"));
    return t;
  }

  int routeIndex(std::string_view name) const {
    for (std::size_t i = 0; i < snap_.routes.size(); ++i)
      if (snap_.routes[i].name == name) return static_cast<int>(i);
    return -1;
  }

  void policy(const Resource<v1::Policy>& p) {
    const auto& spec = p.spec;
    PolicyConfig pc;
    pc.name = p.name;
    pc.index = static_cast<std::uint32_t>(g_->policies.size());
    for (const auto& other : g_->policies)
      if (other.name == p.name) errors_.push_back(p.error("metadata.name", "duplicate Policy name"));
    std::string json;
    (void)pb::util::MessageToJsonString(spec, &json);
    char version[17];
    std::snprintf(version, sizeof version, "%016zx", std::hash<std::string>{}(json));
    pc.version = version;

    if (spec.listeners().empty() && spec.routes().empty())
      errors_.push_back(p.error("spec", "attaches to nothing: name listeners or routes"));
    for (int i = 0; i < spec.listeners_size(); ++i) {
      const auto* l = snap_.findListener(spec.listeners(i));
      if (l == nullptr) dangling(p.error(at("spec.listeners", i), "listener \"" + spec.listeners(i) + "\" is not defined"));
      else g_->by_listener[l->index].push_back(pc.index);
    }
    for (int i = 0; i < spec.routes_size(); ++i) {
      const int r = routeIndex(spec.routes(i));
      if (r < 0) dangling(p.error(at("spec.routes", i), "route \"" + spec.routes(i) + "\" is not defined"));
      else g_->by_route[static_cast<std::size_t>(r)].push_back(pc.index);
    }

    const auto& a = spec.authentication();
    pc.sets_authentication = spec.has_authentication();
    if (!a.methods().empty()) {
      pc.methods = 0;
      for (int i = 0; i < a.methods_size(); ++i) {
        const auto& m = a.methods(i);
        if (m == "api_key") pc.methods |= kApiKey;
        else if (m == "jwt") pc.methods |= kJwt;
        else if (m == "mtls") pc.methods |= kMtls;
        else
          errors_.push_back(p.error(at("spec.authentication.methods", i),
                                    "unknown method \"" + m + "\" (api_key, jwt or mtls)"));
      }
    }
    if (a.has_required()) pc.required = a.required();
    if (!a.api_key_headers().empty()) {
      pc.api_key_headers.clear();
      for (int i = 0; i < a.api_key_headers_size(); ++i) {
        std::string h = a.api_key_headers(i);
        std::transform(h.begin(), h.end(), h.begin(), [](unsigned char c) { return std::tolower(c); });
        if (h.empty() || h.find_first_of(" :\r\n") != std::string::npos)
          errors_.push_back(p.error(at("spec.authentication.apiKeyHeaders", i), "is not a header name"));
        pc.api_key_headers.push_back(std::move(h));
      }
    }
    for (int i = 0; i < a.jwt_issuers_size(); ++i)
      for (std::uint32_t k = 0; k < g_->issuers.size(); ++k)
        if (g_->issuers[k].issuer == a.jwt_issuers(i).issuer()) pc.issuers.push_back(k);
    if ((pc.methods & kJwt) && pc.issuers.empty() && !a.methods().empty())
      errors_.push_back(p.error("spec.authentication.methods", "jwt needs jwtIssuers"));

    if (spec.mode() == "dry_run") pc.dry_run = true;
    else if (!spec.mode().empty() && spec.mode() != "enforce")
      errors_.push_back(p.error("spec.mode", "must be enforce or dry_run"));
    if (spec.default_action() == "deny") pc.default_deny = true;
    else if (!spec.default_action().empty() && spec.default_action() != "allow")
      errors_.push_back(p.error("spec.defaultAction", "must be allow or deny"));

    std::vector<PolicyRuleConfig> deny, allow;
    for (int i = 0; i < spec.rules_size(); ++i) {
      PolicyRuleConfig rule = compileRule(p, at("spec.rules", i), spec.rules(i));
      for (const auto& seen : deny)
        if (seen.name == rule.name) errors_.push_back(p.error(at("spec.rules", i) + ".name", "duplicate rule name"));
      for (const auto& seen : allow)
        if (seen.name == rule.name) errors_.push_back(p.error(at("spec.rules", i) + ".name", "duplicate rule name"));
      (rule.deny ? deny : allow).push_back(std::move(rule));
    }
    pc.rules = std::move(deny);
    for (auto& r : allow) pc.rules.push_back(std::move(r));

    const auto& dc = spec.data_class();
    if (!dc.header().empty()) {
      pc.data_class_header = dc.header();
      std::transform(pc.data_class_header.begin(), pc.data_class_header.end(), pc.data_class_header.begin(),
                     [](unsigned char c) { return std::tolower(c); });
    }
    for (int i = 0; i < dc.trusted_tenants_size(); ++i)
      if (const auto* t = tenantRef(p, at("spec.dataClass.trustedTenants", i), dc.trusted_tenants(i)))
        pc.data_class_trusted_tenants.push_back(t);
    for (int i = 0; i < dc.trusted_spiffe_ids_size(); ++i) {
      if (auto why = common::spiffePatternError(dc.trusted_spiffe_ids(i)); !why.empty())
        errors_.push_back(p.error(at("spec.dataClass.trustedSpiffeIds", i), why));
      pc.data_class_trusted_spiffe_ids.push_back(dc.trusted_spiffe_ids(i));
    }
    for (int i = 0; i < spec.routing_headers_size(); ++i) {
      const auto& h = spec.routing_headers(i);
      if (h == "x-infermesh-capability") pc.allow_capability_header = true;
      else if (h == "x-infermesh-regions") pc.allow_regions_header = true;
      else
        errors_.push_back(p.error(at("spec.routingHeaders", i),
                                  "\"" + h + "\" is not a routing header (x-infermesh-capability, x-infermesh-regions)"));
    }
    g_->policies.push_back(std::move(pc));
  }

  PolicyRuleConfig compileRule(const Resource<v1::Policy>& p, const std::string& path, const v1::PolicyRule& r) {
    PolicyRuleConfig rule;
    rule.name = r.name();
    if (rule.name.empty()) errors_.push_back(p.error(path + ".name", "is required (it names the rule in 403s and metrics)"));
    if (r.action() == "deny") rule.deny = true;
    else if (r.action() != "allow")
      errors_.push_back(p.error(path + ".action", "must be allow or deny"));
    for (int i = 0; i < r.tenants_size(); ++i)
      if (const auto* t = tenantRef(p, at(path + ".tenants", i), r.tenants(i))) rule.tenants.push_back(t);
    for (int i = 0; i < r.principals_size(); ++i) {
      if (r.principals(i).empty() || r.principals(i) == "*")
        errors_.push_back(p.error(at(path + ".principals", i), "must name a principal or a prefix of one"));
      rule.principals.push_back(r.principals(i));
    }
    for (int i = 0; i < r.models_size(); ++i) {
      const auto* m = snap_.findModel(r.models(i));
      if (m == nullptr) dangling(p.error(at(path + ".models", i), "model \"" + r.models(i) + "\" is not defined"));
      else rule.models.push_back(m);
    }
    rule.capabilities.assign(r.capabilities().begin(), r.capabilities().end());
    rule.regions.assign(r.regions().begin(), r.regions().end());
    rule.data_classes.assign(r.data_classes().begin(), r.data_classes().end());
    for (int i = 0; i < r.routes_size(); ++i) {
      const int idx = routeIndex(r.routes(i));
      if (idx < 0) dangling(p.error(at(path + ".routes", i), "route \"" + r.routes(i) + "\" is not defined"));
      else rule.routes.push_back(static_cast<std::uint32_t>(idx));
    }
    return rule;
  }

  // A policy on a listener (or on a route reachable through it) whose chain
  // lacks authn or authz would never be enforced: refuse that config.
  void enforcedWhereAttached() {
    auto chainHas = [](const ListenerConfig& l, std::string_view name) {
      return std::find(l.filter_names.begin(), l.filter_names.end(), name) != l.filter_names.end();
    };
    auto check = [&](const ListenerConfig& l, const PolicyConfig& pc) {
      const Resource<v1::Policy>* res = nullptr;
      for (const auto& p : r_.policies)
        if (p.name == pc.name) res = &p;
      if (res == nullptr) return;
      for (const char* needed : {"authn", "authz"})
        if (!chainHas(l, needed))
          errors_.push_back(res->error("spec", "applies on Listener/" + l.name + ", whose filter chain has no " +
                                                   needed + " filter: the policy would not be enforced"));
    };
    for (const auto& l : snap_.listeners)
      for (std::uint32_t p : g_->by_listener[l.index]) check(l, g_->policies[p]);
    for (std::size_t r = 0; r < snap_.routes.size(); ++r) {
      if (g_->by_route[r].empty()) continue;
      const auto& route = snap_.routes[r];
      for (const auto& l : snap_.listeners) {
        const bool reachable = route.listeners.empty() ||
                               std::find(route.listeners.begin(), route.listeners.end(), l.index) != route.listeners.end();
        if (!reachable) continue;
        for (std::uint32_t p : g_->by_route[r]) check(l, g_->policies[p]);
      }
    }
  }

  void dangling(ConfigError e) {
    e.dangling_reference = true;
    errors_.push_back(std::move(e));
  }

  const Resources& r_;
  Snapshot& snap_;
  ConfigErrors& errors_;
  Governance* g_ = nullptr;
};

}  // namespace

void compileGovernance(const Resources& resources, Snapshot& snap, ConfigErrors& errors) {
  snap.governance = GovernanceCompiler(resources, snap, errors).run();
}

}  // namespace infermesh::config
