#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace infermesh::stats {

// Interns metric label values (route and model names) as small integers at
// config-compile time, so request-path metrics are keyed by integers and
// never by strings. Ids are stable for the process's life; the table only
// grows with distinct names ever configured. Id 0 is the empty name.
class NameTable {
 public:
  static NameTable& instance();
  std::uint32_t intern(std::string_view name);
  std::string name(std::uint32_t id) const;

 private:
  NameTable() { names_.emplace_back(); ids_.emplace("", 0); }
  mutable std::mutex mu_;  // taken at compile and scrape time only
  std::vector<std::string> names_;
  std::unordered_map<std::string, std::uint32_t> ids_;
};

}  // namespace infermesh::stats
