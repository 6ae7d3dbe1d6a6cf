#include "xds/snapshot.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <cstdio>
#include <functional>
#include <string>

#include "infermesh/config/v1/config.pb.h"
#include "xds/resource_types.h"

namespace infermesh::xds {
namespace {

std::string hashHex(const std::string& bytes) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016zx", std::hash<std::string>{}(bytes));
  return buf;
}

// Map fields (filter configs) serialise in a fixed order here, so equal
// content always gets the same version.
std::string deterministicBytes(const google::protobuf::Message& m) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream sink(&out);
    google::protobuf::io::CodedOutputStream coded(&sink);
    coded.SetSerializationDeterministic(true);
    m.SerializeToCodedStream(&coded);
  }
  return out;
}

}  // namespace

void SnapshotBuilder::add(const std::string& name, const google::protobuf::Message& message,
                          const std::string& source_file, int source_line) {
  discovery::v1::Resource r;
  r.set_name(name);
  r.mutable_resource()->PackFrom(message);
  r.set_source_file(source_file);
  r.set_source_line(source_line);
  r.set_version(hashHex(deterministicBytes(message) + '\0' + source_file + ':' + std::to_string(source_line)));
  types_[r.resource().type_url()].by_name[name] = std::move(r);
}

std::shared_ptr<const Snapshot> SnapshotBuilder::build() {
  auto snap = std::make_shared<Snapshot>();
  for (auto& [type, typed] : types_) {
    discovery::v1::DiscoveryResponse carrier;
    std::string versions;
    for (const auto& [name, r] : typed.by_name) {
      *carrier.add_resources() = r;
      versions += name + "=" + r.version() + ";";
    }
    typed.version = hashHex(versions);
    typed.wire_resources = std::make_shared<const std::string>(carrier.SerializeAsString());
  }
  // Every known type is present, empty or not: "no routes" is a state too.
  for (const auto& type : pushOrder()) {
    auto& typed = types_[type];
    if (!typed.wire_resources) {
      typed.version = hashHex("");
      typed.wire_resources = std::make_shared<const std::string>();
    }
  }
  snap->types_ = std::move(types_);
  types_.clear();
  return snap;
}

const TypedResources* Snapshot::get(const std::string& type_url) const {
  auto it = types_.find(type_url);
  return it == types_.end() ? nullptr : &it->second;
}

std::string Snapshot::version(const std::string& type_url) const {
  const auto* t = get(type_url);
  return t ? t->version : std::string();
}

std::string Snapshot::consistencyError() const {
  const auto* models = get(std::string(kModelType));
  const auto* listeners = get(std::string(kListenerType));
  const auto* routes = get(std::string(kRouteType));
  if (routes == nullptr) return {};
  // Names and aliases a route may use.
  std::map<std::string, bool> model_names;
  if (models)
    for (const auto& [name, r] : models->by_name) {
      model_names[name] = true;
      config::v1::Model m;
      if (r.resource().UnpackTo(&m))
        for (const auto& a : m.aliases()) model_names[a] = true;
    }
  std::string missing;
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) missing += (missing.empty() ? "" : "; ") + what;
  };
  for (const auto& [name, r] : routes->by_name) {
    config::v1::Route route;
    if (!r.resource().UnpackTo(&route)) {
      need(false, "Route/" + name + " does not unpack");
      continue;
    }
    if (!route.model().empty())
      need(model_names.count(route.model()) > 0, "Route/" + name + " refers to missing model " + route.model());
    for (const auto& m : route.match().models())
      need(model_names.count(m) > 0, "Route/" + name + " matches missing model " + m);
    for (const auto& l : route.match().listeners())
      need(listeners && listeners->by_name.count(l) > 0, "Route/" + name + " refers to missing listener " + l);
  }
  return missing;
}

}  // namespace infermesh::xds
