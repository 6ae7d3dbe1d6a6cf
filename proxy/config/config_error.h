#pragma once

#include <string>
#include <vector>

namespace infermesh::config {

// One validation problem, located as precisely as the source allows:
// file, document (Kind/name), field path inside the document, and line.
struct ConfigError {
  std::string file;
  std::string document;  // "Route/chat", or "document 3" before the name is known
  std::string field;     // "spec.match.pathPrefix"; empty for document-level errors
  int line = 0;          // 1-based; 0 when unknown
  std::string message;
  // A reference to a resource that does not exist (may resolve once the
  // rest of a config arrives, when it comes over xDS one type at a time).
  bool dangling_reference = false;

  // "routes.yaml:12: Route/chat: spec.model: model \"gpt-x\" is not defined"
  std::string str() const;
};

using ConfigErrors = std::vector<ConfigError>;

std::string joinErrors(const ConfigErrors& errors);
bool onlyDanglingReferences(const ConfigErrors& errors);

}  // namespace infermesh::config
