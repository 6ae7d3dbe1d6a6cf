#pragma once

#include <map>
#include <string>

#include "proxy/config/resources.h"

namespace infermesh::config {

using Labels = std::map<std::string, std::string>;

// "role=sidecar,region=eu" -> labels; false on a malformed entry.
bool parseLabels(const std::string& text, Labels& out);

// Drops the Listeners and Routes whose nodeSelector the labels do not
// satisfy (every selector entry must be present with the same value).
// Models are kept: what a node may reach is decided by its routes.
Resources selectForNode(const Resources& all, const Labels& labels);

}  // namespace infermesh::config
