#pragma once

#include <string>
#include <string_view>

namespace infermesh::common {

// Appends `s` as a JSON string literal (quoted, escaped). Bytes that are
// not well-formed UTF-8 become U+FFFD, so the result is always valid JSON.
void appendJsonString(std::string& out, std::string_view s);

}  // namespace infermesh::common
