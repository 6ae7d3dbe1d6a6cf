#pragma once

namespace infermesh::filters {

// Registers every filter shipped with the proxy by name. Called once at
// start, before any config is compiled.
void registerBuiltinFilters();

}  // namespace infermesh::filters
