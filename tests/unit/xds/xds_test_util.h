#pragma once

#include <string>
#include <vector>

#include "infermesh/config/v1/config.pb.h"
#include "xds/snapshot.h"

namespace infermesh::xds::testing {

// A snapshot with the given models (one endpoint each) and routes
// (name -> model).
inline std::shared_ptr<const Snapshot> makeSnapshot(const std::vector<std::string>& models,
                                                    const std::vector<std::pair<std::string, std::string>>& routes,
                                                    const std::string& endpoint = "127.0.0.1:9000") {
  SnapshotBuilder b;
  for (const auto& m : models) {
    config::v1::Model model;
    model.add_endpoints()->set_address(endpoint);
    b.add(m, model);
  }
  for (const auto& [name, model] : routes) {
    config::v1::Route route;
    route.set_model(model);
    b.add(name, route);
  }
  return b.build();
}

}  // namespace infermesh::xds::testing
