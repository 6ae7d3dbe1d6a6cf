#pragma once

#include <map>
#include <string>
#include <vector>

#include "infermesh/config/v1/config.pb.h"
#include "proxy/config/config_error.h"

namespace infermesh::config {

// A parsed, schema-checked YAML document and where it came from, so that
// later (semantic) validation can still point at file, document and line.
template <typename Spec>
struct Resource {
  std::string name;
  std::string file;
  int line = 0;  // the document's first line (1-based); 0: unknown
  Spec spec;
  // Field path inside the document ("spec.model") -> 1-based line.
  std::map<std::string, int> lines;

  std::string document() const;
  int lineOf(const std::string& path) const {
    for (std::string p = path;;) {
      if (auto it = lines.find(p); it != lines.end()) return it->second;
      auto cut = p.find_last_of(".[");
      if (cut == std::string::npos) return line;
      p.resize(cut);
    }
  }
  ConfigError error(const std::string& path, std::string message) const {
    return ConfigError{file, document(), path, lineOf(path), std::move(message)};
  }
};

template <> inline std::string Resource<v1::Listener>::document() const { return "Listener/" + name; }
template <> inline std::string Resource<v1::Model>::document() const { return "Model/" + name; }
template <> inline std::string Resource<v1::Route>::document() const { return "Route/" + name; }
template <> inline std::string Resource<v1::Tenant>::document() const { return "Tenant/" + name; }
template <> inline std::string Resource<v1::Policy>::document() const { return "Policy/" + name; }
template <> inline std::string Resource<v1::Mesh>::document() const { return "Mesh/" + name; }

// Everything read from a config file or directory, in source order.
struct Resources {
  std::vector<Resource<v1::Listener>> listeners;
  std::vector<Resource<v1::Model>> models;
  std::vector<Resource<v1::Route>> routes;
  std::vector<Resource<v1::Tenant>> tenants;
  std::vector<Resource<v1::Policy>> policies;
  // Read by selectForNode (the control plane, or a proxy reading files),
  // which derives each proxy's models and routes from it; never sent.
  std::vector<Resource<v1::Mesh>> meshes;
};

}  // namespace infermesh::config
