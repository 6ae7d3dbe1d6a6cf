#include "xds/resource_types.h"

#include <algorithm>

namespace infermesh::xds {

const std::vector<std::string>& pushOrder() {
  static const std::vector<std::string> order{std::string(kModelType), std::string(kTenantType),
                                              std::string(kPolicyType), std::string(kListenerType),
                                              std::string(kRouteType)};
  return order;
}

bool knownType(std::string_view type_url) {
  const auto& o = pushOrder();
  return std::find(o.begin(), o.end(), type_url) != o.end();
}

}  // namespace infermesh::xds
