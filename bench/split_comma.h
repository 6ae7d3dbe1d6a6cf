#pragma once

#include <string>
#include <vector>

namespace infermesh::bench {

// "a,b,,c" -> {"a", "b", "c"}: the mock servers' list flags.
inline std::vector<std::string> splitComma(const std::string& s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= s.size()) {
    auto comma = s.find(',', start);
    std::string item = s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!item.empty()) out.push_back(item);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace infermesh::bench
