#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace infermesh::xds {

// Type URLs of the resources the control plane serves (google.protobuf.Any
// naming, as Envoy's xDS uses).
inline constexpr std::string_view kModelType = "type.googleapis.com/infermesh.config.v1.Model";
inline constexpr std::string_view kListenerType = "type.googleapis.com/infermesh.config.v1.Listener";
inline constexpr std::string_view kRouteType = "type.googleapis.com/infermesh.config.v1.Route";
inline constexpr std::string_view kTenantType = "type.googleapis.com/infermesh.config.v1.Tenant";
inline constexpr std::string_view kPolicyType = "type.googleapis.com/infermesh.config.v1.Policy";

// Push order: a resource comes before the resources that refer to it, so a
// proxy never holds a route to a model it does not have yet. Removals go in
// the reverse order. Tenants and Policies come before the Listeners and
// Routes they protect, so a new route is never served before its policy.
const std::vector<std::string>& pushOrder();

bool knownType(std::string_view type_url);

}  // namespace infermesh::xds
