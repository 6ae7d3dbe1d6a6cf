#include "proxy/stats/name_table.h"

namespace infermesh::stats {

NameTable& NameTable::instance() {
  static NameTable table;
  return table;
}

std::uint32_t NameTable::intern(std::string_view name) {
  std::lock_guard lock(mu_);
  auto [it, inserted] = ids_.try_emplace(std::string(name), static_cast<std::uint32_t>(names_.size()));
  if (inserted) names_.emplace_back(name);
  return it->second;
}

std::string NameTable::name(std::uint32_t id) const {
  std::lock_guard lock(mu_);
  return id < names_.size() ? names_[id] : std::string();
}

}  // namespace infermesh::stats
