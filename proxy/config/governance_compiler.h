#pragma once

#include "proxy/config/config_error.h"
#include "proxy/config/resources.h"
#include "proxy/config/snapshot.h"

namespace infermesh::config {

// Compiles the Tenants and Policies into snap.governance (null when there
// are none). Runs after listeners, models and routes (in match order) are
// in the snapshot: policies refer to them.
void compileGovernance(const Resources& resources, Snapshot& snap, ConfigErrors& errors);

}  // namespace infermesh::config
