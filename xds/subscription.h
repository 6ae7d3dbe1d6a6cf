#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>

#include "infermesh/discovery/v1/discovery.pb.h"

namespace infermesh::xds {

// The proxy's half of one resource type on a state-of-the-world stream.
// `apply` validates and applies a response's resources, returning an empty
// string on success or the error that goes back in the NACK.
class Subscription {
 public:
  using Apply = std::function<std::string(const discovery::v1::DiscoveryResponse&)>;

  Subscription(std::string type_url, discovery::v1::Node node) : type_url_(std::move(type_url)), node_(std::move(node)) {}

  // The first request on a (re)connected stream: it carries the last version
  // applied, so a server that has nothing newer sends nothing.
  discovery::v1::DiscoveryRequest initialRequest() const;
  // ACK (new version + nonce) or NACK (last good version + nonce + error).
  discovery::v1::DiscoveryRequest onResponse(const discovery::v1::DiscoveryResponse& response, const Apply& apply);

  const std::string& acceptedVersion() const { return accepted_version_; }
  const std::optional<std::string>& lastError() const { return last_error_; }

 private:
  discovery::v1::DiscoveryRequest base() const;

  std::string type_url_;
  discovery::v1::Node node_;
  std::string accepted_version_;
  std::optional<std::string> last_error_;
};

// The proxy's half of one resource type on a delta stream: the resources it
// holds by name and version.
class DeltaSubscription {
 public:
  using Apply = std::function<std::string(const std::map<std::string, discovery::v1::Resource>& next)>;

  DeltaSubscription(std::string type_url, discovery::v1::Node node)
      : type_url_(std::move(type_url)), node_(std::move(node)) {}

  // Subscribes to `names` (empty: everything) and reports held versions.
  discovery::v1::DeltaDiscoveryRequest initialRequest(const std::vector<std::string>& names = {}) const;
  discovery::v1::DeltaDiscoveryRequest subscribe(const std::vector<std::string>& add,
                                                 const std::vector<std::string>& remove);
  // Computes the next resource set and hands it to `apply`: ACK on success,
  // NACK (resources unchanged) on error.
  discovery::v1::DeltaDiscoveryRequest onResponse(const discovery::v1::DeltaDiscoveryResponse& response,
                                                  const Apply& apply);

  const std::map<std::string, discovery::v1::Resource>& resources() const { return resources_; }

 private:
  std::string type_url_;
  discovery::v1::Node node_;
  std::map<std::string, discovery::v1::Resource> resources_;
};

}  // namespace infermesh::xds
