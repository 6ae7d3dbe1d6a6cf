#pragma once

#include <string>
#include <string_view>

#include "proxy/common/json_string.h"
#include "proxy/filter/stream_context.h"

namespace spdlog {
class logger;
}

namespace infermesh::proxy {

class Worker;

using common::appendJsonString;

// {"error":{"message":..., "type":..., "code":...}}: the OpenAI error shape.
std::string openAiErrorJson(const filter::LocalReply& reply);

// Hop-by-hop headers (RFC 9110 section 7.6.1) are never forwarded.
bool isHopByHop(std::string_view name);

// An x-request-id from a client is kept only when short and printable.
bool validRequestId(std::string_view id);

// One JSON line per request (see docs/operations.md).
void writeAccessLog(const filter::StreamContext& ctx, spdlog::logger& log);
// At a stream's end, whatever its protocol: request counters, the duration
// histogram and the access log line.
void recordStreamEnd(Worker& worker, const filter::StreamContext& ctx, std::uint32_t listener_index);

}  // namespace infermesh::proxy
