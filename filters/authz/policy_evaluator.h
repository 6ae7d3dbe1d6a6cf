#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "proxy/config/governance.h"
#include "proxy/filter/identity.h"

namespace infermesh::config {
struct ModelConfig;
}

namespace infermesh::authz {

// What one decision is about.
struct Facts {
  const filter::Identity* identity = nullptr;  // null: authn did not run
  const config::ModelConfig* model = nullptr;  // the target; null: none resolved
  std::string_view data_class;
  int route = -1;  // index in Snapshot::routes; -1: no route matched
};

struct Decision {
  enum class Outcome { Allow, Deny, DryRunDeny };
  Outcome outcome = Outcome::Allow;
  // The policy and rule that decided: for a denial the denying ones; for
  // an allow the last policy evaluated and its allowing rule ("default":
  // no rule matched and the policy's defaultAction decided). Views of the
  // config (or of literals): a decision allocates nothing for its names.
  const config::PolicyConfig* policy = nullptr;
  std::string_view rule;
  std::string_view reason;  // reason code of a denial
  // A dry-run policy that would have denied (the outcome may still be Allow).
  const config::PolicyConfig* dry_run_policy = nullptr;
  std::string_view dry_run_rule;
  // Endpoint regions: only those in `only` when restricted, never `denied`.
  bool restricted = false;
  std::vector<std::string> only;
  std::vector<std::string> denied;

  bool regionPasses(std::string_view region) const;
  // Whether the decision constrains regions at all.
  bool regionBound() const { return restricted || !denied.empty(); }
};

// Evaluates every policy that applies (listener's, then route's): in each,
// deny rules before allow rules; an enforcing policy's denial decides; a
// dry-run policy's denial is only recorded. Region conditions narrow the
// endpoints instead of deciding, and a target model left with no endpoint
// in an allowed region is denied (never spilled over).
Decision evaluate(const config::Governance& g, std::uint32_t listener, const Facts& facts);

bool principalMatches(std::string_view pattern, std::string_view principal);

}  // namespace infermesh::authz
