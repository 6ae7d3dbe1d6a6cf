#pragma once

#include "proxy/config/config_error.h"
#include "proxy/config/resources.h"
#include "proxy/config/snapshot.h"

namespace infermesh::config {

// Compiles the limits of Tenants, Routes and Models, the Tenants' budgets,
// the Routes' budgetDowngrade and the Models' tokenizers into
// snap.rate_limits (null when there are none). Runs after governance:
// tenant limits are indexed like Governance::tenants.
void compileRateLimits(const Resources& resources, Snapshot& snap, ConfigErrors& errors);

}  // namespace infermesh::config
