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
// Then applies the Mesh, if any (applyMesh).
Resources selectForNode(const Resources& all, const Labels& labels);

// Under a Mesh, models whose endpoints name nodes are rewritten for the
// proxy the labels describe: a sidecar (or a node proxy without the
// model) reaches them through those nodes' proxies; a node proxy keeps the
// endpoints on its own node and gets a last-tried route on the Mesh's
// inbound listener for any model named in the body.
void applyMesh(Resources& resources, const Labels& labels);

}  // namespace infermesh::config
