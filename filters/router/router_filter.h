#pragma once

#include <string>

#include "proxy/filter/filter.h"

namespace infermesh::router {

// Registers the "router" filter: the terminal filter that reads the model
// from the body, matches a route, and forwards to the model's endpoints.
void registerRouterFilter();

}  // namespace infermesh::router
