#include "proxy/server/http_util.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "proxy/config/governance.h"
#include "proxy/config/snapshot.h"
#include "proxy/filter/identity.h"
#include "proxy/server/downstream.h"
#include "proxy/server/worker.h"

namespace infermesh::proxy {

std::string openAiErrorJson(const filter::LocalReply& reply) {
  std::string out = "{\"error\":{\"message\":";
  appendJsonString(out, reply.message);
  out += ",\"type\":";
  appendJsonString(out, reply.type);
  out += ",\"code\":";
  appendJsonString(out, reply.code);
  out += "}}";
  return out;
}

bool isHopByHop(std::string_view name) {
  static constexpr std::string_view kHop[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                              "te", "trailer", "upgrade", "proxy-authenticate", "proxy-authorization"};
  for (auto h : kHop)
    if (filter::equalsIgnoreCase(name, h)) return true;
  return false;
}

bool validRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id)
    if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\') return false;
  return true;
}

void writeAccessLog(const filter::StreamContext& ctx, spdlog::logger& log) {
  using config::LogField;
  const auto now = std::chrono::steady_clock::now();
  auto ms = [&](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(t - ctx.start).count();
  };
  const auto* identity = ctx.state.get(filter::kIdentity);
  const auto& u = ctx.usage;
  auto count = [](std::int64_t n) { return n >= 0 ? std::to_string(n) : std::string("null"); };
  const std::int64_t out = u.reported() ? u.output : (u.streamed_output > 0 ? u.streamed_output : -1);
  const auto& format = ctx.listener->access_log_format;
  std::string line = "{";
  line.reserve(640);
  for (const LogField f : format.fields) {
    if (line.size() > 1) line += ',';
    line += '"';
    line += config::kLogFieldNames[static_cast<std::size_t>(f)];
    line += "\":";
    switch (f) {
      case LogField::RequestId: appendJsonString(line, ctx.request_id); break;
      case LogField::Client: appendJsonString(line, ctx.client_address); break;
      case LogField::Method: appendJsonString(line, ctx.request.method); break;
      case LogField::Path: appendJsonString(line, ctx.request.target); break;
      case LogField::Status: line += std::to_string(ctx.response_status); break;
      case LogField::Model: appendJsonString(line, ctx.model); break;
      case LogField::ServedModel:
        appendJsonString(line, ctx.target_model ? std::string_view(ctx.target_model->name) : std::string_view());
        break;
      case LogField::Route: appendJsonString(line, ctx.route ? std::string_view(ctx.route->name) : std::string_view()); break;
      case LogField::Routing: appendJsonString(line, ctx.routing_reason); break;
      case LogField::Fallbacks: line += std::to_string(ctx.upstream_fallbacks); break;
      case LogField::Upstream: appendJsonString(line, ctx.upstream_address); break;
      case LogField::Region: appendJsonString(line, ctx.upstream_region); break;
      case LogField::Attempts: line += std::to_string(ctx.upstream_attempts); break;
      case LogField::Stream: line += ctx.stream ? "true" : "false"; break;
      case LogField::Protocol: appendJsonString(line, ctx.protocol); break;
      case LogField::Identity: appendJsonString(line, ctx.peer_identity); break;
      case LogField::BytesIn: line += std::to_string(ctx.request_body_bytes); break;
      case LogField::BytesOut: line += std::to_string(ctx.response_body_bytes); break;
      case LogField::DurationMs: line += std::to_string(ms(now)); break;
      case LogField::FirstByteMs: line += ctx.first_byte_at ? std::to_string(ms(*ctx.first_byte_at)) : "null"; break;
      case LogField::TtftMs:  // a stream's first token is its first body byte
        line += ctx.stream && ctx.first_byte_at ? std::to_string(ms(*ctx.first_byte_at)) : "null";
        break;
      // Who called (authn) and what the model used (when a filter asked
      // the core for usage: ratelimit, telemetry).
      case LogField::Tenant:
        appendJsonString(line, identity && identity->tenant ? std::string_view(identity->tenant->name) : std::string_view());
        break;
      case LogField::Principal:
        appendJsonString(line, identity ? std::string_view(identity->principal) : std::string_view());
        break;
      case LogField::InputTokens: line += count(u.input); break;
      case LogField::OutputTokens: line += count(out); break;
      case LogField::CachedTokens: line += std::to_string(u.cached_input); break;
      case LogField::Cost:
        if (ctx.target_model != nullptr && (u.input >= 0 || out >= 0)) {
          char cost[32];
          std::snprintf(cost, sizeof cost, "%.6f",
                        ctx.target_model->cost(std::max<std::int64_t>(0, u.input), u.cached_input,
                                               std::max<std::int64_t>(0, out)));
          line += cost;
        } else {
          line += "null";
        }
        break;
      case LogField::Error: appendJsonString(line, ctx.error_reason); break;
      case LogField::Count: break;
    }
  }
  // The listener's extra fields: headers, then body fields; null when absent.
  auto extra = [&](const std::string& name, std::optional<std::string_view> value) {
    if (line.size() > 1) line += ',';
    appendJsonString(line, name);
    line += ':';
    if (value) appendJsonString(line, *value);
    else line += "null";
  };
  for (const auto& e : format.extra) extra(e.name, ctx.request.headers.get(e.header));
  for (std::size_t i = 0; i < format.body_names.size(); ++i) {
    const bool have = i < ctx.log_body_values.size() && !ctx.log_body_values[i].empty();
    extra(format.body_names[i], have ? std::optional<std::string_view>(ctx.log_body_values[i]) : std::nullopt);
  }
  line += '}';
  log.info(line);
}

bool isGrpc(const filter::RequestHead& request) {
  const auto type = request.headers.get("content-type");
  return type && type->starts_with("application/grpc");
}

int grpcStatusFor(const filter::LocalReply& reply) {
  // By the proxy's own reason first, then the HTTP status as the gRPC
  // HTTP-to-status mapping has it.
  const std::string_view code = reply.code;
  if (code.find("timeout") != std::string_view::npos) return 4;               // DEADLINE_EXCEEDED
  if (code == "model_not_found" || code == "no_capable_model") return 5;      // NOT_FOUND
  if (code == "overloaded" || code == "upstream_rate_limited") return 8;      // RESOURCE_EXHAUSTED
  if (code == "no_route") return 12;                                          // UNIMPLEMENTED
  if (code == "invalid_json" || code == "missing_model" || code == "bad_request" ||
      code == "duplicate_model" || code == "unsupported_body_format" || code == "bad_path")
    return 3;  // INVALID_ARGUMENT
  switch (reply.status) {
    case 400: return 13;  // INTERNAL
    case 401: return 16;  // UNAUTHENTICATED
    case 403: return 7;   // PERMISSION_DENIED
    case 404: return 12;  // UNIMPLEMENTED
    case 408: return 4;
    case 413:
    case 431: return 8;
    case 429:
    case 502:
    case 503:
    case 504: return 14;  // UNAVAILABLE
    default: return 2;    // UNKNOWN
  }
}

void grpcTrailersOnly(const filter::LocalReply& reply, filter::ResponseHead& head) {
  head.status = 200;
  head.headers.add("content-type", "application/grpc");
  head.headers.add("grpc-status", std::to_string(grpcStatusFor(reply)));
  // grpc-message is percent-encoded (printable ASCII except '%' as is).
  std::string message;
  for (unsigned char c : reply.message) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      message += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";
      message += '%';
      message += kHex[c >> 4];
      message += kHex[c & 0xf];
    }
  }
  head.headers.add("grpc-message", message);
  for (const auto& [k, v] : reply.extra_headers) head.headers.add(k, v);
}

boost::asio::awaitable<void> writeLocalReply(DownstreamStream& ds, filter::StreamContext& ctx) {
  const filter::LocalReply& reply = *ctx.local_reply;
  if (ctx.error_reason.empty()) ctx.error_reason = reply.code;
  filter::ResponseHead head;
  if (isGrpc(ctx.request)) {
    grpcTrailersOnly(reply, head);
    co_await ds.sendHeaders(head, true, std::nullopt);
    co_return;
  }
  head.status = reply.status;
  head.headers.add("content-type", reply.content_type.empty() ? "application/json" : reply.content_type);
  for (const auto& [k, v] : reply.extra_headers) head.headers.add(k, v);
  if (!reply.chunks.empty()) {
    // A streamed answer: each chunk goes out as it would from a model.
    if (!co_await ds.sendHeaders(head, false, std::nullopt)) co_return;
    for (std::size_t i = 0; i < reply.chunks.size(); ++i)
      if (!co_await ds.sendBody(reply.chunks[i], i + 1 == reply.chunks.size())) co_return;
    co_return;
  }
  const std::string body = reply.body ? *reply.body : openAiErrorJson(reply);
  if (co_await ds.sendHeaders(head, body.empty(), body.size()) && !body.empty()) co_await ds.sendBody(body, true);
}

void recordStreamEnd(Worker& worker, const filter::StreamContext& ctx, std::uint32_t listener_index) {
  auto& st = worker.stats();
  st.countRequest(ctx.route ? ctx.route->stats_id : 0, ctx.target_model ? ctx.target_model->stats_id : 0,
                  ctx.response_status,
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - ctx.start).count());
  if (auto* log = worker.accessLog(listener_index)) writeAccessLog(ctx, *log);
}

}  // namespace infermesh::proxy
