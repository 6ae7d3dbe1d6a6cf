#include "xds/subscription.h"

namespace infermesh::xds {

namespace dv1 = discovery::v1;

dv1::DiscoveryRequest Subscription::base() const {
  dv1::DiscoveryRequest r;
  *r.mutable_node() = node_;
  r.set_type_url(type_url_);
  r.set_version_info(accepted_version_);
  return r;
}

dv1::DiscoveryRequest Subscription::initialRequest() const { return base(); }

dv1::DiscoveryRequest Subscription::onResponse(const dv1::DiscoveryResponse& response, const Apply& apply) {
  std::string error = apply(response);
  if (error.empty()) {
    accepted_version_ = response.version_info();
    last_error_.reset();
  } else {
    last_error_ = error;
  }
  dv1::DiscoveryRequest r = base();  // NACK keeps the last good version
  r.set_response_nonce(response.nonce());
  if (!error.empty()) {
    r.mutable_error_detail()->set_code(3);  // INVALID_ARGUMENT
    r.mutable_error_detail()->set_message(error);
  }
  return r;
}

dv1::DeltaDiscoveryRequest DeltaSubscription::initialRequest(const std::vector<std::string>& names) const {
  dv1::DeltaDiscoveryRequest r;
  *r.mutable_node() = node_;
  r.set_type_url(type_url_);
  for (const auto& n : names) r.add_resource_names_subscribe(n);
  for (const auto& [name, res] : resources_) (*r.mutable_initial_resource_versions())[name] = res.version();
  return r;
}

dv1::DeltaDiscoveryRequest DeltaSubscription::subscribe(const std::vector<std::string>& add,
                                                        const std::vector<std::string>& remove) {
  dv1::DeltaDiscoveryRequest r;
  r.set_type_url(type_url_);
  for (const auto& n : add) r.add_resource_names_subscribe(n);
  for (const auto& n : remove) {
    r.add_resource_names_unsubscribe(n);
    resources_.erase(n);
  }
  return r;
}

dv1::DeltaDiscoveryRequest DeltaSubscription::onResponse(const dv1::DeltaDiscoveryResponse& response,
                                                         const Apply& apply) {
  auto next = resources_;
  for (const auto& r : response.resources()) next[r.name()] = r;
  for (const auto& name : response.removed_resources()) next.erase(name);
  dv1::DeltaDiscoveryRequest ack;
  ack.set_type_url(type_url_);
  ack.set_response_nonce(response.nonce());
  std::string error = apply(next);
  if (error.empty()) {
    resources_ = std::move(next);
  } else {
    ack.mutable_error_detail()->set_code(3);
    ack.mutable_error_detail()->set_message(error);
  }
  return ack;
}

}  // namespace infermesh::xds
