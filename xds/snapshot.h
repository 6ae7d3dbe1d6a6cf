#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "infermesh/discovery/v1/discovery.pb.h"

namespace infermesh::xds {

// The resources of one type in a snapshot, with the type's version.
struct TypedResources {
  std::string version;
  std::map<std::string, discovery::v1::Resource> by_name;  // each with its own version
  // The resources serialised once, as the repeated `resources` field of a
  // DiscoveryResponse, shared by every stream that sends this version.
  std::shared_ptr<const std::string> wire_resources;
};

// An immutable set of resources for one node, one version per type. Built
// with SnapshotBuilder; knows nothing of streams or gRPC.
class Snapshot {
 public:
  const TypedResources* get(const std::string& type_url) const;
  std::string version(const std::string& type_url) const;
  // Empty when every name a resource refers to exists (a Route's model,
  // match.models and match.listeners); otherwise what is missing.
  std::string consistencyError() const;

 private:
  friend class SnapshotBuilder;
  std::map<std::string, TypedResources> types_;
};

class SnapshotBuilder {
 public:
  // `message` is a config.v1 message; the hash of its content and of where
  // it came from (`source_file`:`source_line`, shown in a proxy's
  // /config_dump) is its version, so a document that moved is re-sent.
  void add(const std::string& name, const google::protobuf::Message& message, const std::string& source_file = {},
           int source_line = 0);
  // Type versions are content hashes too: a type whose resources did not
  // change keeps its version, so nothing is pushed for it.
  std::shared_ptr<const Snapshot> build();

 private:
  std::map<std::string, TypedResources> types_;
};

}  // namespace infermesh::xds
