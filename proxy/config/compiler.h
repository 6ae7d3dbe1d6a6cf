#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "proxy/config/config_error.h"
#include "proxy/config/node_selector.h"
#include "proxy/config/resources.h"
#include "proxy/config/snapshot.h"

namespace infermesh::config {

struct CompileResult {
  std::shared_ptr<const Snapshot> snapshot;  // null when errors is not empty
  ConfigErrors errors;
};

// Validates resources semantically (addresses, cross references, filter
// configs, limits) and builds the immutable Snapshot. All or nothing.
CompileResult compile(const Resources& resources, std::uint64_t version);

// Loads a file or directory and compiles it as the proxy with `labels`
// sees it: the one path used at start and on SIGHUP. With a Mesh in it,
// the whole config is checked, then compiled as the control plane would
// send it to that proxy (selectForNode: listeners and routes by label,
// then the Mesh); a Mesh needs labels.
CompileResult loadAndCompile(const std::string& path, std::uint64_t version, const Labels& labels);

// Loads and compiles the config as written, for tools that check it
// (infermeshctl validate/explain) the way the control plane does.
CompileResult loadAndCheck(const std::string& path, std::uint64_t version);

}  // namespace infermesh::config
