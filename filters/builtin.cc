#include "filters/builtin.h"

#include "filters/router/router_filter.h"

namespace infermesh::filters {

void registerBuiltinFilters() {
  static bool done = false;
  if (done) return;
  done = true;
  router::registerRouterFilter();
}

}  // namespace infermesh::filters
