#include "proxy/config/config_error.h"

namespace infermesh::config {

std::string ConfigError::str() const {
  std::string out = file.empty() ? "<config>" : file;
  if (line > 0) out += ":" + std::to_string(line);
  out += ": ";
  if (!document.empty()) out += document + ": ";
  if (!field.empty()) out += field + ": ";
  out += message;
  return out;
}

std::string joinErrors(const ConfigErrors& errors) {
  std::string out;
  for (const auto& e : errors) {
    if (!out.empty()) out += '\n';
    out += e.str();
  }
  return out;
}

bool onlyDanglingReferences(const ConfigErrors& errors) {
  for (const auto& e : errors)
    if (!e.dangling_reference) return false;
  return !errors.empty();
}

}  // namespace infermesh::config
