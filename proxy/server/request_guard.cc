#include "proxy/server/request_guard.h"

#include "proxy/config/snapshot.h"
#include "proxy/stats/worker_stats.h"
#include "proxy/common/spiffe_id.h"

namespace infermesh::proxy {
namespace {

constexpr std::string_view kInternalPrefix = "x-infermesh-";

bool isInternal(std::string_view name) {
  return name.size() >= kInternalPrefix.size() && filter::equalsIgnoreCase(name.substr(0, kInternalPrefix.size()), kInternalPrefix);
}

}  // namespace

bool trustedPeer(const config::ListenerConfig& listener, std::string_view client_address, std::string_view spiffe_id) {
  if (!spiffe_id.empty() && common::spiffeIdAllowed(spiffe_id, listener.trusted_spiffe_ids)) return true;
  for (const auto& net : listener.trusted_sources)
    if (common::cidrContains(net, client_address)) return true;
  return false;
}

bool guardRequest(filter::StreamContext& ctx, stats::WorkerStats& stats) {
  const config::ListenerConfig& listener = *ctx.listener;
  auto normalized = common::normalizeTarget(ctx.request.target, listener.path_normalization);
  if (!normalized.error.empty()) {
    stats.count(stats::DownstreamError::BadPath);
    ctx.sendLocalReply(400, "request target refused: " + normalized.error, "invalid_request_error", "bad_path");
    return false;
  }
  // An absolute-form target names the host; RFC 9112 section 3.2.2 has it
  // replace Host.
  if (!normalized.authority.empty()) ctx.request.headers.set("host", std::move(normalized.authority));
  if (!normalized.unchanged) ctx.request.target = std::move(normalized.target);

  bool any_internal = false;
  for (const auto& field : ctx.request.headers.fields()) any_internal = any_internal || isInternal(field.first);
  if (!any_internal || trustedPeer(listener, ctx.client_address, ctx.peer_identity)) return true;
  const auto removed = ctx.request.headers.removeIf([&](std::string_view name) {
    if (!isInternal(name)) return false;
    for (const auto& allowed : listener.client_headers)
      if (filter::equalsIgnoreCase(name, allowed)) return false;
    return true;
  });
  if (removed) stats.count(stats::DownstreamError::UntrustedHeader);
  return true;
}

}  // namespace infermesh::proxy
