#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace infermesh::config {

struct ModelConfig;

// Tenants and Policies, compiled (docs/governance.md). Immutable, part of
// the Snapshot; the authn and authz filters read it, and attach what needs
// a runtime (JWKS key sources, metrics, the audit log) before publish.

enum class CacheScope : std::uint8_t { Tenant, None };

struct TenantConfig {
  std::string name;
  std::uint32_t index = 0;
  std::vector<std::string> data_classes;  // may send; empty: any
  std::string default_data_class = "internal";
  CacheScope cache_scope = CacheScope::Tenant;
  bool maySend(std::string_view data_class) const {
    if (data_classes.empty()) return true;
    for (const auto& d : data_classes)
      if (d == data_class) return true;
    return false;
  }
};

using Sha256 = std::array<unsigned char, 32>;

struct ApiKeyEntry {
  Sha256 hash{};
  const TenantConfig* tenant = nullptr;
  std::string name;
  std::string principal;  // "<tenant>/<name>"
};

// Tokens of one issuer that belong to one tenant.
struct JwtTenantMapping {
  const TenantConfig* tenant = nullptr;
  std::string claim;
  std::vector<std::string> values;
  std::vector<std::string> subject_prefixes;
};

struct JwtIssuerConfig {
  std::string issuer;
  std::vector<std::string> audiences;
  std::string jwks_file;
  std::string jwks_uri;
  std::string jwks_ca_file;
  std::chrono::milliseconds refresh{300000};
  std::chrono::seconds clock_skew{60};
  std::vector<JwtTenantMapping> tenants;  // first match wins, in source order
  std::string defined_by;                 // Policy/<name>, for conflicting definitions
};

struct SpiffeTenantMapping {
  std::string id;  // ends in "/": a prefix of whole segments
  const TenantConfig* tenant = nullptr;
};

enum AuthMethod : std::uint8_t { kApiKey = 1, kJwt = 2, kMtls = 4 };

struct PolicyRuleConfig {
  std::string name;
  bool deny = false;
  std::vector<const TenantConfig*> tenants;
  std::vector<std::string> principals;  // trailing '*': prefix
  std::vector<const ModelConfig*> models;
  std::vector<std::string> capabilities;
  std::vector<std::string> regions;
  std::vector<std::string> data_classes;
  std::vector<std::uint32_t> routes;  // route indexes in Snapshot::routes
};

struct PolicyConfig {
  std::string name;
  std::string version;  // content hash of the spec, in audit records
  std::uint32_t index = 0;
  bool sets_authentication = false;  // has an authentication section
  std::uint8_t methods = kApiKey | kJwt | kMtls;
  bool required = true;
  std::vector<std::string> api_key_headers{"authorization", "x-api-key"};
  std::vector<std::uint32_t> issuers;  // indexes into Governance::issuers
  bool dry_run = false;
  bool default_deny = false;
  std::vector<PolicyRuleConfig> rules;  // deny rules first, then allow, each in source order
  std::string data_class_header = "x-infermesh-data-class";
  std::vector<const TenantConfig*> data_class_trusted_tenants;
  std::vector<std::string> data_class_trusted_spiffe_ids;
  bool allow_capability_header = false;
  bool allow_regions_header = false;
};

struct Governance {
  std::vector<TenantConfig> tenants;
  std::vector<ApiKeyEntry> api_keys;
  // Keyed by the hash's first 8 bytes; the whole hash is then compared in
  // constant time.
  std::unordered_multimap<std::uint64_t, std::uint32_t> api_key_index;
  std::vector<JwtIssuerConfig> issuers;
  std::vector<SpiffeTenantMapping> spiffe;
  std::vector<PolicyConfig> policies;
  std::vector<std::vector<std::uint32_t>> by_listener;  // policy indexes, by listener index
  std::vector<std::vector<std::uint32_t>> by_route;     // by route index

  // The policies that apply to a request: its listener's, then its
  // route's (route < 0: no route matched).
  template <typename Fn>
  void forEachPolicy(std::uint32_t listener, int route, Fn&& fn) const {
    if (listener < by_listener.size())
      for (std::uint32_t p : by_listener[listener]) fn(policies[p]);
    if (route >= 0 && static_cast<std::size_t>(route) < by_route.size())
      for (std::uint32_t p : by_route[static_cast<std::size_t>(route)]) fn(policies[p]);
  }
  bool anyPolicy(std::uint32_t listener, int route) const {
    bool any = false;
    forEachPolicy(listener, route, [&](const PolicyConfig&) { any = true; });
    return any;
  }

  const TenantConfig* findTenant(std::string_view name) const {
    for (const auto& t : tenants)
      if (t.name == name) return &t;
    return nullptr;
  }
  const JwtIssuerConfig* findIssuer(std::string_view iss) const {
    for (const auto& i : issuers)
      if (i.issuer == iss) return &i;
    return nullptr;
  }
  static std::uint64_t bucketOf(const Sha256& h) {
    std::uint64_t k;
    std::memcpy(&k, h.data(), sizeof k);
    return k;
  }
};

}  // namespace infermesh::config
