#pragma once

#include <boost/asio/awaitable.hpp>

#include <string>
#include <string_view>

#include "proxy/common/json_string.h"
#include "proxy/filter/stream_context.h"

namespace spdlog {
class logger;
}

namespace infermesh::proxy {

class Worker;
class DownstreamStream;

using common::appendJsonString;

// {"error":{"message":..., "type":..., "code":...}}: the OpenAI error shape.
std::string openAiErrorJson(const filter::LocalReply& reply);

// Hop-by-hop headers (RFC 9110 section 7.6.1) are never forwarded.
bool isHopByHop(std::string_view name);

// An x-request-id from a client is kept only when short and printable.
bool validRequestId(std::string_view id);

// gRPC (content-type application/grpc[+proto|...]).
bool isGrpc(const filter::RequestHead& request);
// A local answer to a gRPC call: HTTP 200 with grpc-status and
// grpc-message and no body ("trailers-only"), the status mapped from the
// reply (timeouts -> DEADLINE_EXCEEDED, no endpoint -> UNAVAILABLE ...).
void grpcTrailersOnly(const filter::LocalReply& reply, filter::ResponseHead& head);
int grpcStatusFor(const filter::LocalReply& reply);

// Writes ctx.local_reply as a response on `ds`, in the shape the client
// speaks: an OpenAI error body, or a gRPC trailers-only status. For codecs'
// sendLocalReply() before the response started.
boost::asio::awaitable<void> writeLocalReply(DownstreamStream& ds, filter::StreamContext& ctx);

// One JSON line per request (see docs/operations.md).
void writeAccessLog(const filter::StreamContext& ctx, spdlog::logger& log);
// At a stream's end, whatever its protocol: request counters, the duration
// histogram and the access log line.
void recordStreamEnd(Worker& worker, const filter::StreamContext& ctx, std::uint32_t listener_index);

}  // namespace infermesh::proxy
