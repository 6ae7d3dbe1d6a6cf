#include "filters/authz/policy_evaluator.h"

#include <algorithm>

#include "proxy/config/snapshot.h"

namespace infermesh::authz {
namespace {

using config::PolicyConfig;
using config::PolicyRuleConfig;

template <typename T, typename V>
bool contains(const std::vector<T>& list, const V& v) {
  return std::find(list.begin(), list.end(), v) != list.end();
}

// Every condition a rule sets, except regions.
bool matches(const PolicyRuleConfig& r, const Facts& f) {
  const auto* id = f.identity;
  if (!r.tenants.empty() && (id == nullptr || id->tenant == nullptr || !contains(r.tenants, id->tenant))) return false;
  if (!r.principals.empty()) {
    if (id == nullptr || id->principal.empty()) return false;
    if (std::none_of(r.principals.begin(), r.principals.end(),
                     [&](const std::string& p) { return principalMatches(p, id->principal); }))
      return false;
  }
  if (!r.models.empty() && (f.model == nullptr || !contains(r.models, f.model))) return false;
  if (!r.capabilities.empty() &&
      (f.model == nullptr || std::none_of(r.capabilities.begin(), r.capabilities.end(),
                                          [&](const std::string& c) { return f.model->hasCapability(c); })))
    return false;
  if (!r.data_classes.empty() && !contains(r.data_classes, f.data_class)) return false;
  if (!r.routes.empty() && (f.route < 0 || !contains(r.routes, static_cast<std::uint32_t>(f.route)))) return false;
  return true;
}

struct Verdict {
  bool deny = false;
  std::string_view rule;
  bool restricted = false;
  std::vector<std::string> only;
  std::vector<std::string> denied;
};

Verdict judge(const PolicyConfig& p, const Facts& f) {
  Verdict v;
  bool allowed_anywhere = false;
  std::string_view allow_rule;
  for (const auto& r : p.rules) {  // deny rules come first (compiler)
    if (!matches(r, f)) continue;
    if (r.deny) {
      if (r.regions.empty()) {
        v.deny = true;
        v.rule = r.name;
        return v;
      }
      for (const auto& reg : r.regions)
        if (!contains(v.denied, reg)) v.denied.push_back(reg);
      continue;
    }
    if (allow_rule.empty()) allow_rule = r.name;
    if (r.regions.empty()) {
      allowed_anywhere = true;
    } else {
      for (const auto& reg : r.regions)
        if (!contains(v.only, reg)) v.only.push_back(reg);
    }
  }
  if (allow_rule.empty()) {
    v.rule = "default";
    v.deny = p.default_deny;
    return v;
  }
  v.rule = allow_rule;
  v.restricted = !allowed_anywhere;
  if (allowed_anywhere) v.only.clear();
  return v;
}

}  // namespace

bool principalMatches(std::string_view pattern, std::string_view principal) {
  if (!pattern.empty() && pattern.back() == '*') {
    pattern.remove_suffix(1);
    return principal.substr(0, pattern.size()) == pattern;
  }
  return pattern == principal;
}

bool Decision::regionPasses(std::string_view region) const {
  if (restricted && std::find(only.begin(), only.end(), region) == only.end()) return false;
  return std::find(denied.begin(), denied.end(), region) == denied.end();
}

Decision evaluate(const config::Governance& g, std::uint32_t listener, const Facts& facts) {
  Decision d;
  const PolicyConfig* restricting = nullptr;
  g.forEachPolicy(listener, facts.route, [&](const PolicyConfig& p) {
    if (d.outcome == Decision::Outcome::Deny) return;
    Verdict v = judge(p, facts);
    if (p.dry_run) {
      if (v.deny && d.dry_run_policy == nullptr) {
        d.dry_run_policy = &p;
        d.dry_run_rule = v.rule;
      }
      return;  // a dry run never narrows what the request may use
    }
    if (v.deny) {
      d.outcome = Decision::Outcome::Deny;
      d.policy = &p;
      d.rule = v.rule;
      d.reason = "policy_denied";
      return;
    }
    d.policy = &p;
    d.rule = v.rule;
    if (v.restricted) {
      restricting = &p;
      if (!d.restricted) {
        d.only = std::move(v.only);
        d.restricted = true;
      } else {
        std::erase_if(d.only, [&](const std::string& r) { return !contains(v.only, r); });
      }
    }
    if (!v.denied.empty()) restricting = &p;
    for (auto& r : v.denied)
      if (!contains(d.denied, r)) d.denied.push_back(std::move(r));
  });
  if (d.outcome == Decision::Outcome::Allow && facts.model != nullptr && d.regionBound()) {
    const bool any = std::any_of(facts.model->endpoints.begin(), facts.model->endpoints.end(),
                                 [&](const config::EndpointConfig& ep) { return d.regionPasses(ep.region); });
    if (!any) {
      d.outcome = Decision::Outcome::Deny;
      d.policy = restricting;
      d.rule = "regions";
      d.reason = "no_allowed_region";
    }
  }
  if (d.outcome == Decision::Outcome::Allow && d.dry_run_policy != nullptr) d.outcome = Decision::Outcome::DryRunDeny;
  return d;
}

}  // namespace infermesh::authz
