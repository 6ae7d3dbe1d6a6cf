#pragma once

#include <string_view>

#include "proxy/config/snapshot.h"
#include "proxy/filter/stream_context.h"

namespace infermesh::router {

// First route, in snapshot order, whose listener, path, headers and model
// conditions all hold. `model` is the body's model name (may be empty).
const config::RouteConfig* matchRoute(const config::Snapshot& snapshot, std::uint32_t listener_index,
                                      const filter::RequestHead& request, std::string_view model);

}  // namespace infermesh::router
