#include "filters/router/target_resolver.h"

#include "filters/router/grpc_message.h"
#include "filters/router/model_extractor.h"
#include "filters/router/model_selector.h"
#include "filters/router/route_matcher.h"
#include "proxy/config/snapshot.h"
#include "proxy/filter/filter.h"
#include "proxy/server/http_util.h"
#include "proxy/server/worker.h"
#include "proxy/upstream/load_balancer.h"

namespace infermesh::router {
namespace {

using filter::StreamContext;
using stats::DownstreamError;

bool reject(StreamContext& ctx, DownstreamError e, unsigned status, std::string message, const char* code) {
  ctx.worker->stats().count(e);
  ctx.sendLocalReply(status, std::move(message), "invalid_request_error", code);
  return false;
}

// The capability choice of an autoSelect route.
const config::ModelConfig* selectByCapability(StreamContext& ctx, const config::RouteConfig& route,
                                              std::string_view capability, std::uint64_t prompt_tokens) {
  auto& worker = *ctx.worker;
  std::vector<std::string_view> request_regions;
  if (auto regions = ctx.request.headers.get("x-infermesh-regions")) request_regions = parseRegionList(*regions);
  AutoRequest req;
  req.capability = capability;
  // About four bytes of JSON per token: errs high, which is the safe side
  // for skipping models whose context window is too small.
  req.prompt_tokens = prompt_tokens;
  req.allowed_regions = &route.residency;
  req.request_regions = &request_regions;
  req.observed_ttft = [&worker](const config::ModelConfig& m) {
    return upstream::currentEwma(worker.modelLatency(m.stats_id), upstream::Clock::now());
  };
  req.available = [&worker](const config::ModelConfig& m) {
    const auto now = upstream::Clock::now();
    for (const auto& ep : m.endpoints)
      if (worker.endpointStates().get(ep.key).available(now)) return true;
    return false;
  };
  return selectModel(*ctx.snapshot, route, req);
}

}  // namespace

bool resolveTarget(StreamContext& ctx, std::string& body) {
  // The client's content-type only says how to read the model for route
  // matching; the target model's protocol decides the format (below).
  const bool grpc = proxy::isGrpc(ctx.request);
  bool repeated_model = false;
  ctx.model.clear();
  ctx.route = nullptr;
  ctx.target_model = nullptr;
  ctx.unresolved.reset();
  if (grpc) {
    // An Open Inference Protocol call names its model inside the first
    // protobuf message; other gRPC calls route by path and headers.
    if (!body.empty()) oipModelName(body, ctx.model, repeated_model);
    ctx.stream = true;
  } else if (!body.empty()) {
    thread_local ModelExtractor extractor;
    ModelExtractor::ensurePadding(body);
    BodyFields fields;
    if (auto err = extractor.extract(body, fields); err != ExtractError::None)
      return reject(ctx, DownstreamError::InvalidJson, 400, describe(err),
                    err == ExtractError::DuplicateModel ? "duplicate_model" : "invalid_json");
    ctx.model = std::move(fields.model);
    ctx.stream = fields.stream;
  }
  const auto* route = matchRoute(*ctx.snapshot, ctx.listener->index, ctx.request, ctx.model);
  if (route == nullptr)
    return reject(ctx, DownstreamError::NoRoute, 404,
                  "no route for " + ctx.request.method + " " + std::string(ctx.request.path()) +
                      (ctx.model.empty() ? "" : " with model \"" + ctx.model + "\""),
                  "no_route");
  ctx.route = route;
  const config::ModelConfig* target = nullptr;
  // The route's target is authoritative: a pinned or split route ignores
  // "auto" and the capability header, and only a route that configures
  // autoSelect selects, within what it allows.
  const bool selects = route->target == nullptr && route->split.empty() && route->auto_select.enabled;
  const auto capability = selects ? ctx.request.headers.get("x-infermesh-capability") : std::nullopt;
  if (selects && (ctx.model == "auto" || capability)) {
    const std::string_view wanted = capability ? *capability : std::string_view(route->auto_select.capability);
    if (!route->auto_select.allows(wanted))
      return reject(ctx, DownstreamError::UnknownModel, 404,
                    "route `" + route->name + "` does not offer capability \"" + std::string(wanted) + "\"",
                    "no_capable_model");
    target = selectByCapability(ctx, *route, wanted, body.size() / 4);
    ctx.routing_reason = "capability";
    if (target == nullptr)
      return reject(ctx, DownstreamError::UnknownModel, 404,
                    "no model with capability \"" + std::string(wanted) + "\" may serve this request",
                    "no_capable_model");
  } else if (!route->split.empty()) {
    target = pickSplit(*route, static_cast<std::uint32_t>(ctx.worker->rng()() % route->split_total));
    ctx.routing_reason = "split";
  } else if (route->target != nullptr) {
    target = route->target;
    ctx.routing_reason = "pinned";
  } else {
    if (ctx.model.empty())
      return reject(ctx, DownstreamError::MissingModel, 400, "request body must name a \"model\"", "missing_model");
    target = ctx.snapshot->findModel(ctx.model);
    if (target == nullptr)
      return reject(ctx, DownstreamError::UnknownModel, 404, "The model `" + ctx.model + "` does not exist",
                    "model_not_found");
    ctx.routing_reason = "requested";
  }
  // A body the proxy cannot read as its model's format would reach the
  // backend unchecked (a JSON request labelled application/grpc, say).
  if (grpc != (target->body_format == config::BodyFormat::OpenInference))
    return reject(ctx, DownstreamError::BadRequest, 415,
                  std::string("model `") + target->name + "` takes " +
                      (target->body_format == config::BodyFormat::OpenInference ? "Open Inference Protocol gRPC"
                                                                               : "OpenAI-style JSON") +
                      " requests",
                  "unsupported_body_format");
  ctx.target_model = target;
  // The backend may know the model under another name (alias, upstreamModel);
  // a gRPC body naming the model twice is normalised to the one routed.
  if (!ctx.model.empty() && (ctx.model != target->upstream_model || repeated_model)) {
    const bool rewritten = grpc ? rewriteOipModelName(body, target->upstream_model)
                                : ModelExtractor::rewriteModel(body, target->upstream_model);
    if (!rewritten && repeated_model)
      return reject(ctx, DownstreamError::BadRequest, 400, "the request names model_name more than once",
                    "duplicate_model");
  }
  return true;
}

namespace {

class Resolver final : public filter::TargetResolver {
 public:
  bool resolve(StreamContext& ctx, std::string& body) const override { return resolveTarget(ctx, body); }
};

const filter::Registration kRegistered{std::make_shared<Resolver>()};

}  // namespace
}  // namespace infermesh::router
