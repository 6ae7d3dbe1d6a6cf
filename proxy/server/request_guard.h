#pragma once

#include <string_view>

#include "proxy/filter/stream_context.h"

namespace infermesh::stats {
struct WorkerStats;
}

namespace infermesh::proxy {

// What every request passes before the filter chain, whichever codec
// parsed it (see docs/security.md):
//  - the target is normalised (common::normalizeTarget, with the listener's
//    options), so routes match and the model server receives the same path;
//    a refused target gets a 400 "bad_path";
//  - x-infermesh-* headers are removed unless the peer is trusted or the
//    header is one the listener lets any client send.
// Returns false, with ctx.local_reply set and the cause counted, when the
// request is refused.
bool guardRequest(filter::StreamContext& ctx, stats::WorkerStats& stats);

// Whether the listener trusts this peer's x-infermesh-* headers.
bool trustedPeer(const config::ListenerConfig& listener, std::string_view client_address, std::string_view spiffe_id);

}  // namespace infermesh::proxy
