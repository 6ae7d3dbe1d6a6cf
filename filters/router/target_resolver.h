#pragma once

#include <string>

#include "proxy/filter/stream_context.h"

namespace infermesh::router {

// Target resolution (DESIGN.md section 4, step 4): reads the model from the
// body (JSON, or the first OIP protobuf message), matches a route, and
// chooses the target model (pinned, split, capability selection within what
// the route allows, or the model the body names); checks the body format
// against the model's protocol and rewrites the body's model to the name the
// backend knows. Sets ctx.model, ctx.stream, ctx.route and
// ctx.target_model. Returns false, with ctx.local_reply set and the cause
// counted, when the request cannot be served.
//
// Registered as the filter::TargetResolver: the stream driver runs it once
// the body is complete and before the first filter, so every filter sees
// the route, the requested and the target model (and its price). A filter
// that changes what resolution reads sets ctx.reresolve; the router then
// resolves again before it forwards.
bool resolveTarget(filter::StreamContext& ctx, std::string& body);

}  // namespace infermesh::router
