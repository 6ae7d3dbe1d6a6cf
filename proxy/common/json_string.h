#pragma once

#include <string>
#include <string_view>

namespace infermesh::common {

// Appends `s` as a JSON string literal (quoted, escaped).
void appendJsonString(std::string& out, std::string_view s);

}  // namespace infermesh::common
