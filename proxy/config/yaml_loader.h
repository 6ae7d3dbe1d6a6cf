#pragma once

#include <string>
#include <string_view>

#include "proxy/config/config_error.h"
#include "proxy/config/resources.h"

namespace infermesh::config {

// Reads Kubernetes-style documents (apiVersion infermesh.io/v1, kind,
// metadata.name, spec) and maps each spec onto its protobuf message via the
// protobuf JSON mapping. Unknown fields, wrong types and malformed YAML are
// reported with file, document, field path and line. Every problem found is
// reported, not only the first.
class YamlLoader {
 public:
  // A file, or every *.yaml / *.yml file in a directory (sorted by name;
  // hidden entries such as a ConfigMap's ..data are skipped, their symlinked
  // files are read through the visible names).
  void loadPath(const std::string& path);
  // One file's text; `file` is used in error messages.
  void loadText(std::string_view text, const std::string& file);

  Resources& resources() { return resources_; }
  const ConfigErrors& errors() const { return errors_; }

 private:
  Resources resources_;
  ConfigErrors errors_;
};

}  // namespace infermesh::config
