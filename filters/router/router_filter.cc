#include "filters/router/router_filter.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/http.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>

#include "filters/router/grpc_message.h"
#include "filters/router/mirror.h"
#include "filters/router/model_extractor.h"
#include "filters/router/model_selector.h"
#include "filters/router/target_resolver.h"
#include "filters/router/upstream_connect.h"
#include "proxy/config/snapshot.h"
#include "proxy/common/spiffe_id.h"
#include "proxy/filter/model_signals.h"
#include "proxy/server/downstream.h"
#include "proxy/server/http_util.h"
#include "proxy/server/upstream_h2.h"
#include "proxy/server/worker.h"
#include "proxy/tracing/stream_trace.h"
#include "proxy/upstream/health_checker.h"
#include "proxy/upstream/credential_file.h"
#include "proxy/upstream/load_balancer.h"

namespace infermesh::router {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using filter::FilterStatus;
using filter::StreamContext;
using proxy::UpstreamConnection;
using stats::DownstreamError;
using stats::UpstreamError;
using Clock = std::chrono::steady_clock;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// Models' upstream credentials (Model.upstreamCredential), read from their
// files per snapshot and kept fresh off the request path.
const std::uint32_t kCredentialSlot = filter::nextRuntimeSlot();
struct Credentials {
  std::vector<std::shared_ptr<upstream::CredentialFile>> by_model;  // null: none
};

bool prepareCredentials(const config::Snapshot& snap, std::string& error) {
  auto creds = std::make_shared<Credentials>();
  bool any = false;
  for (const auto& m : snap.models) {
    std::shared_ptr<upstream::CredentialFile> f;
    if (m.upstream_credential.enabled()) {
      f = upstream::CredentialFile::open(m.upstream_credential.value_file, error);
      if (!f) {
        error = "Model/" + m.name + " upstreamCredential: " + error;
        return false;
      }
      any = true;
    }
    creds->by_model.push_back(std::move(f));
  }
  if (!any) return true;
  if (snap.filter_runtime.size() <= kCredentialSlot) snap.filter_runtime.resize(kCredentialSlot + 1);
  snap.filter_runtime[kCredentialSlot] = std::move(creds);
  return true;
}

const filter::Registration kCredentialsPrepared{filter::SnapshotPreparer{&prepareCredentials}};

// The header and value the model's endpoints expect; null when it has none.
std::shared_ptr<const std::string> credentialFor(const StreamContext& ctx, const config::ModelConfig& model) {
  if (!model.upstream_credential.enabled()) return nullptr;
  const auto* creds = static_cast<const Credentials*>(ctx.snapshot->runtime(kCredentialSlot));
  if (creds == nullptr || model.index >= creds->by_model.size() || !creds->by_model[model.index]) return nullptr;
  return creds->by_model[model.index]->value();
}

// Names listed in a Connection header are hop-by-hop for this message too.
bool namedInConnection(std::string_view connection, std::string_view name) {
  std::string_view v = connection;
  while (!v.empty()) {
    auto comma = v.find(',');
    std::string_view token = v.substr(0, comma);
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
    if (filter::equalsIgnoreCase(token, name)) return true;
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
  return false;
}

// Trace context the router writes itself, per attempt, when it traces.
bool isTraceHeader(std::string_view name) {
  return filter::equalsIgnoreCase(name, "traceparent") || filter::equalsIgnoreCase(name, "tracestate");
}

// The model's configured upstream headers, as HTTP/1.1 lines.
void appendUpstreamHeaders(std::string& head, const config::ModelConfig& model) {
  for (const auto& [name, value] : model.upstream_headers) {
    head += name;
    head += ": ";
    head += value;
    head += "\r\n";
  }
}

bool idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" || method == "DELETE";
}

// Seconds until `t`, rounded up, at least 1: a Retry-After value.
std::string secondsUntil(Clock::time_point t) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t - Clock::now()).count();
  return std::to_string(std::max<long long>(1, (ms + 999) / 1000));
}

// A failure before anything reached the client. Retries and fallbacks name
// these kinds; what the client gets if neither takes it is in the
// LocalFailure (or, for an upstream status, the upstream response itself).
enum class Failure { None, ConnectFailure, NoEndpoint, Reset, Timeout, Status5xx, Status429, ContextLength, Overload };

class RouterFilter final : public filter::StreamFilter {
 public:
  FilterStatus onRequestHeaders(StreamContext& ctx, bool end_stream) override {
    if (end_stream) start(ctx);
    return FilterStatus::Continue;
  }

  FilterStatus onRequestBody(StreamContext& ctx, filter::BodyChunk& body, bool end_stream) override {
    // Held until complete (the listener's body limit bounds it). Target
    // resolution hands the whole body over as one chunk of its own, which
    // is taken without a copy.
    if (body_.empty() && end_stream && body.owned()) body_.swap(body.edit());
    else body_.append(body.view());
    if (end_stream) start(ctx);
    return FilterStatus::Continue;
  }

 private:
  enum class Outcome {
    Done,             // the client has its answer (or is gone)
    Retry,            // failed; another endpoint of the same model takes it
    Fallback,         // failed; the route's next fallback takes it
    Failed,           // failed; answer the client with failure_
    StaleConnection,  // a pooled connection turned out closed
    SwitchToHttp2,    // TLS negotiated HTTP/2 with this endpoint
    Admitted,         // admission let the request through to the endpoints
  };

  struct LocalFailure {
    unsigned status = 0;
    std::string message;
    const char* code = "";
    std::string retry_after;  // empty: none
  };

  // The connection cancelled the exchange because the client went away.
  static bool clientLeft(const StreamContext& ctx) { return ctx.error_source == filter::ErrorSource::Downstream; }

  void start(StreamContext& ctx) {
    // Usually resolved by the target_resolution filter at the head of the
    // chain; again here when a filter since changed what it reads.
    if (ctx.unresolved && !ctx.reresolve) {
      auto reply = std::move(*ctx.unresolved);
      ctx.unresolved.reset();
      ctx.sendLocalReply(std::move(reply));
      return;
    }
    if ((ctx.route == nullptr || ctx.reresolve) && !resolveTarget(ctx, body_)) return;
    ctx.reresolve = false;
    grpc_ = proxy::isGrpc(ctx.request);
    if (ctx.target_changed && !ctx.model.empty()) rewriteBodyModel(body_, *ctx.target_model);
    if (auto regions = ctx.request.headers.get("x-infermesh-regions")) request_regions_ = parseRegionList(*regions);
    asio::co_spawn(ctx.worker->io(), forward(ctx), asio::detached);
  }

  // Names `model` to the backend in the body, JSON or gRPC.
  bool rewriteBodyModel(std::string& body, const config::ModelConfig& model) const {
    if (grpc_) return rewriteOipModelName(body, model.upstream_model);
    return ModelExtractor::rewriteModel(body, model.upstream_model);
  }

  // About four bytes of JSON per token: errs high, which is the safe side
  // for skipping models whose context window is too small.
  std::uint64_t promptTokenEstimate() const { return body_.size() / 4; }

  // Remaining time under the route's overall deadline, capped by `limit`.
  Clock::duration budget(Clock::duration limit) const {
    return deadline_ == Clock::time_point::max() ? limit : std::min(limit, deadline_ - Clock::now());
  }
  // The same, also capped by the first-token deadline until the first body
  // byte has arrived.
  Clock::duration readBudget(Clock::duration idle, bool got_first_byte) const {
    auto b = budget(idle);
    if (!got_first_byte && first_token_at_ != Clock::time_point::max()) b = std::min(b, first_token_at_ - Clock::now());
    return b;
  }
  bool firstTokenLate() const { return first_token_at_ != Clock::time_point::max() && Clock::now() >= first_token_at_; }
  bool pastDeadline() const { return deadline_ != Clock::time_point::max() && Clock::now() >= deadline_; }

  // A 429 with Retry-After (seconds) rests the endpoint that long: the load
  // balancer sends other requests elsewhere meanwhile (capped at 5 minutes).
  // When all of a model's endpoints rest, the model does.
  static void coolDown(proxy::Worker& worker, const config::EndpointConfig& ep, std::string_view retry_after) {
    unsigned seconds = 0;
    auto [p, ec] = std::from_chars(retry_after.data(), retry_after.data() + retry_after.size(), seconds);
    if (ec != std::errc() || seconds == 0) return;
    auto& health = worker.endpointStates().get(ep.key);
    health.cooldown_until =
        std::max(health.cooldown_until, upstream::Clock::now() + std::chrono::seconds(std::min(seconds, 300u)));
  }

  // An SSE client cannot see a status after the stream started; it gets an
  // explicit error event before the stream is cut.
  static std::string sseErrorEvent(const std::string& message, const std::string& code) {
    filter::LocalReply reply;
    reply.message = message;
    reply.type = "upstream_error";
    reply.code = code;
    return "event: error\ndata: " + proxy::openAiErrorJson(reply) + "\n\n";
  }

  // The upstream request head minus `host` (set per endpoint). Written by
  // hand, like the downstream response: a relay only copies fields, and one
  // string plus the body make a single gather write.
  void buildRequest(const StreamContext& ctx) {
    std::string& h = head_;
    h.clear();
    h.reserve(512);
    h += ctx.request.method;
    h += ' ';
    h += ctx.request.target;
    h += " HTTP/1.1\r\n";
    std::string_view forwarded_for;
    const std::string_view connection = ctx.request.headers.get("connection").value_or("");
    const auto& cred = ctx.target_model->upstream_credential;
    const auto secret = credentialFor(ctx, *ctx.target_model);
    for (const auto& [name, value] : ctx.request.headers.fields()) {
      if (secret && filter::equalsIgnoreCase(name, cred.header)) continue;  // the model's own replaces it
      if (trace_ && isTraceHeader(name)) continue;  // written per attempt
      if (!ctx.target_model->upstream_headers.empty() && ctx.target_model->setsHeader(name)) continue;
      if (proxy::isHopByHop(name) || filter::equalsIgnoreCase(name, "host") ||
          filter::equalsIgnoreCase(name, "content-length") || filter::equalsIgnoreCase(name, "expect") ||
          filter::equalsIgnoreCase(name, "x-request-id") || filter::equalsIgnoreCase(name, "x-forwarded-client-cert") ||
          (!connection.empty() && namedInConnection(connection, name)))
        continue;
      if (filter::equalsIgnoreCase(name, "x-forwarded-for")) {
        forwarded_for = value;
        continue;
      }
      h += name;
      h += ": ";
      h += value;
      h += "\r\n";
    }
    h += "x-forwarded-for: ";
    if (!forwarded_for.empty()) {
      h += forwarded_for;
      h += ", ";
    }
    h += ctx.client_address;
    h += "\r\nx-request-id: ";
    h += ctx.request_id;
    h += "\r\n";
    // The mTLS-verified caller, for the backend; a client's own header of
    // that name was dropped above, so it cannot be forged.
    if (!ctx.peer_identity.empty()) {
      h += "x-forwarded-client-cert: URI=";
      h += common::xfccValue(ctx.peer_identity);
      h += "\r\n";
    }
    if (trace_ && !trace_->tracestate.empty()) {
      h += "tracestate: ";
      h += trace_->tracestate;
      h += "\r\n";
    }
    // After length_at_: a mirror copies the head up to there and must not
    // carry this model's credential to another model's server.
    length_at_ = h.size();
    if (secret) {
      h += cred.header;
      h += ": ";
      h += cred.prefix;
      h += *secret;
      h += "\r\n";
    }
    appendUpstreamHeaders(h, *ctx.target_model);
    if (!body_.empty() || ctx.request.method == "POST" || ctx.request.method == "PUT") {
      h += "content-length: ";
      h += std::to_string(body_.size());
      h += "\r\n";
    }
    h += "host: ";
    host_at_ = h.size();
  }

  // Shadow copies: each mirror takes its share of requests, with its own
  // copy of head and body, and runs detached from this stream.
  void sendMirrors(StreamContext& ctx) {
    auto& worker = *ctx.worker;
    for (const auto& m : ctx.route->mirrors) {
      if (std::uniform_real_distribution<double>(0, 100)(worker.rng()) >= m.percent) continue;
      std::string body = body_;
      if (!body.empty() && !ctx.model.empty()) rewriteBodyModel(body, *m.model);
      // The primary's head up to its content-length, then the copy's own.
      std::string head = head_.substr(0, length_at_);
      if (auto secret = credentialFor(ctx, *m.model))
        head += m.model->upstream_credential.header + ": " + m.model->upstream_credential.prefix + *secret + "\r\n";
      appendUpstreamHeaders(head, *m.model);
      // A shadow copy is a child of the request's span, not of an attempt.
      if (trace_) head += "traceparent: " + tracing::formatTraceparent(trace_->trace_id, trace_->span_id, trace_->flags) + "\r\n";
      head += "content-length: " + std::to_string(body.size()) + "\r\nx-infermesh-shadow: 1\r\nhost: ";
      spawnMirror(worker, ctx.snapshot, *m.model, std::move(head), std::move(body),
                  std::chrono::duration_cast<std::chrono::milliseconds>(ctx.route->idle_timeout));
    }
  }

  awaitable<void> forward(StreamContext& ctx) {
    struct Finish {
      proxy::DownstreamStream& ds;
      ~Finish() { ds.finish(); }
    } finish{*ctx.downstream};
    const auto& route = *ctx.route;
    auto& load = ctx.worker->routeLoad(route.stats_id);
    ++load.requests;
    struct Unload {
      proxy::Worker::RouteLoad& load;
      ~Unload() { --load.requests; }
    } unload{load};
    if (route.request_timeout.count() > 0) deadline_ = ctx.start + route.request_timeout;
    // A gRPC client's own deadline also bounds the call.
    if (grpc_)
      if (auto t = ctx.request.headers.get("grpc-timeout"))
        if (auto d = parseGrpcTimeout(*t)) deadline_ = std::min(deadline_, ctx.start + *d);
    trace_ = ctx.state.get(tracing::kStreamTrace);
    buildRequest(ctx);
    if (!route.mirrors.empty()) sendMirrors(ctx);
    // The route's model, then its fallbacks in order: a failure that the
    // next fallback names moves on to it, as long as nothing has been sent
    // to the client yet.
    for (std::size_t next = 0;; ++next) {
      next_fallback_ = next < route.fallbacks.size() ? &route.fallbacks[next] : nullptr;
      const auto& model = *ctx.target_model;
      Outcome o;
      if (next_fallback_ && next_fallback_->on_context_length && model.context_window != 0 &&
          promptTokenEstimate() > model.context_window) {
        o = Outcome::Fallback;  // would not fit: do not even ask
      } else {
        o = co_await tryModel(ctx, model);
      }
      if (o == Outcome::Done) co_return;
      if (o != Outcome::Fallback) {
        ctx.error_source = filter::ErrorSource::Upstream;
        ctx.sendLocalReply(failure_.status, std::move(failure_.message), "upstream_error", failure_.code);
        if (!failure_.retry_after.empty()) ctx.local_reply->extra_headers.emplace_back("retry-after", failure_.retry_after);
        ctx.local_reply->extra_headers.emplace_back("x-infermesh-model", model.name);
        co_await ctx.downstream->sendLocalReply();
        co_return;
      }
      ++ctx.worker->stats().upstream_fallbacks;
      spdlog::debug("fallback from model {} to {}", model.name, next_fallback_->model->name);
      ctx.target_model = next_fallback_->model;
      ++ctx.upstream_fallbacks;
      ctx.routing_reason = "fallback";
      on_fallback_ = true;
      ctx.error_source = filter::ErrorSource::None;
      ctx.local_reply.reset();
      if (!ctx.model.empty()) rewriteBodyModel(body_, *ctx.target_model);
      buildRequest(ctx);
    }
  }

  // What happens after a failure before anything reached the client: a
  // retry on another endpoint of this model (within the retry budget, and
  // for a request that may have reached the model only when that is safe),
  // else the next fallback if it names the failure, else the client is told.
  Outcome decide(StreamContext& ctx, const config::ModelConfig& model, Failure f, bool reached_model) {
    const auto& r = ctx.route->retry;
    const bool wanted = (f == Failure::ConnectFailure && r.on_connect_failure) ||
                        (f == Failure::Reset && (r.on_reset || r.on_5xx)) ||
                        (f == Failure::Timeout && r.on_timeout) || (f == Failure::Status5xx && r.on_5xx) ||
                        (f == Failure::Status429 && r.on_429);
    if (wanted && retries_left_ > 0 && (!reached_model || idempotent(ctx.request.method) || r.retry_non_idempotent) &&
        untriedEndpoint(ctx, model) && !pastDeadline() && retryBudgetAllows(ctx))
      return Outcome::Retry;
    if (const auto* fb = next_fallback_;
        fb && ((f == Failure::ConnectFailure && fb->on_connect_failure) ||
               (f == Failure::NoEndpoint && fb->on_connect_failure) ||
               ((f == Failure::Reset || f == Failure::Status5xx) && fb->on_5xx) ||
               (f == Failure::Timeout && fb->on_timeout) || (f == Failure::Status429 && fb->on_429) ||
               (f == Failure::ContextLength && fb->on_context_length) || (f == Failure::Overload && fb->on_5xx)))
      return Outcome::Fallback;
    return Outcome::Failed;
  }

  // Retries in flight stay within the route's share of requests in flight.
  bool retryBudgetAllows(StreamContext& ctx) const {
    const auto& r = ctx.route->retry;
    const auto& load = ctx.worker->routeLoad(ctx.route->stats_id);
    const std::uint32_t allowed = std::max<std::uint32_t>(r.min_concurrency, load.requests * r.budget_percent / 100);
    if (load.retries < allowed) return true;
    ctx.worker->stats().count(stats::ShedReason::RetryBudget);
    return false;
  }

  // Whether a request whose pooled connection closed after the whole request
  // was written, before any response byte, may go again on a fresh
  // connection. The server may have taken it and started working (a
  // completed write only means the kernel took the bytes), so this is a
  // retry like any other: idempotent, or a route that allows retrying
  // non-idempotent requests on a reset; within attempts and budget.
  bool mayReplayAfterSend(StreamContext& ctx) const {
    const auto& r = ctx.route->retry;
    const bool safe = idempotent(ctx.request.method) || (r.retry_non_idempotent && (r.on_reset || r.on_5xx));
    return safe && retries_left_ > 0 && !pastDeadline() && retryBudgetAllows(ctx);
  }

  bool untriedEndpoint(const StreamContext& ctx, const config::ModelConfig& model) const {
    const upstream::PickRequest pick = pickRequest(ctx, model, 0);
    for (std::size_t i = 0; i < model.endpoints.size(); ++i)
      if (!tried_[i] && upstream::regionAllowed(model.endpoints[i], pick)) return true;
    return false;
  }

  upstream::PickRequest pickRequest(const StreamContext& ctx, const config::ModelConfig& model,
                                    std::uint64_t hash) const {
    upstream::PickRequest pick{tried_,           upstream::Clock::now(),
                               hash,             &ctx.route->residency,
                               &request_regions_, model.locality.enabled ? &ctx.worker->locality() : nullptr};
    if (ctx.request_policy) pick.policy_regions = ctx.request_policy->regionsFor(model);
    return pick;
  }

  // The consistent-hash key: the configured header, else a prefix of the
  // prompt (the part a KV cache can reuse).
  std::uint64_t hashFor(const StreamContext& ctx, const config::ModelConfig& model) const {
    if (!model.lb.hash_header.empty())
      if (auto v = ctx.request.headers.get(model.lb.hash_header)) return upstream::hashKey(*v);
    std::string_view b = body_;
    for (std::string_view key : {"\"messages\"", "\"prompt\"", "\"input\""})
      if (auto at = b.find(key); at != std::string_view::npos) {
        b = b.substr(at);
        break;
      }
    return upstream::hashKey(b.substr(0, model.lb.hash_prompt_prefix_bytes));
  }

  // Waits on a waiter until the gate wakes it, the deadline passes or the
  // client leaves. Returns true when granted.
  awaitable<bool> waitFor(StreamContext& ctx, const config::ModelConfig& model, upstream::Waiter& w,
                          Clock::duration limit) {
    asio::steady_timer timer(ctx.worker->io());
    w.wake = [&timer] { timer.cancel(); };
    timer.expires_after(budget(limit));
    cancel_.set(ctx, [&timer] { timer.cancel(); });
    // The model's queued gauge, for autoscalers, where telemetry declared it.
    const auto* signals = static_cast<const filter::ModelSignals*>(ctx.snapshot->runtime(filter::kModelSignalsSlot));
    const auto* queued = signals && model.index < signals->by_model.size() ? &signals->by_model[model.index].requests_queued
                                                                           : nullptr;
    ++ctx.worker->stats().requests_queued;
    if (queued) queued->add(1);
    co_await timer.async_wait(kTuple);
    if (queued) queued->add(-1);
    --ctx.worker->stats().requests_queued;
    cancel_.clear();
    co_return w.granted;
  }

  Outcome fail(unsigned status, std::string message, const char* code, std::string retry_after = {}) {
    failure_ = LocalFailure{status, std::move(message), code, std::move(retry_after)};
    return Outcome::Failed;
  }

  // Admission to a model: a cold model holds the request until an endpoint
  // passes its health check; circuit breakers shed or queue by priority.
  // Returns Done when the client left while waiting.
  awaitable<Outcome> admit(StreamContext& ctx, const config::ModelConfig& model, upstream::ModelGate& gate) {
    auto& worker = *ctx.worker;
    auto& stats = worker.stats();
    const unsigned workers = worker.workerCount();
    if (model.activation.enabled()) {
      bool ready = false;
      for (const auto& ep : model.endpoints)
        ready = ready || worker.endpointStates().get(ep.key).active == upstream::ActiveHealth::Healthy;
      if (!ready) {
        upstream::Waiter w;
        w.priority = ctx.route->priority;
        if (!gate.waitForActivation(w, upstream::workerShare(model.activation.max_queued, workers))) {
          stats.count(stats::ShedReason::ColdQueueFull);
          co_return fail(503, "model `" + model.name + "` is starting and its queue is full",
                         "model_cold", "5");
        }
        if (worker.healthChecker()) worker.healthChecker()->activate(ctx.snapshot, model);
        const bool granted = co_await waitFor(ctx, model, w, model.activation.queue_timeout);
        if (!granted) {
          gate.cancelActivation(w);
          if (clientLeft(ctx)) co_return Outcome::Done;
          stats.count(stats::ShedReason::ColdStartTimeout);
          co_return fail(503, "model `" + model.name + "` did not become ready in time",
                         "model_cold", "5");
        }
      }
    }
    const auto& cb = model.circuit_breakers;
    const auto max_requests = upstream::workerShare(cb.max_requests, workers);
    const auto max_pending = upstream::workerShare(cb.max_pending_requests, workers);
    switch (gate.acquire(max_requests, max_pending, ctx.route->priority)) {
      case upstream::Admission::Granted:
        co_return Outcome::Admitted;
      case upstream::Admission::Shed:
        stats.count(stats::ShedReason::MaxRequests);
        co_return fail(503, "model `" + model.name + "` is at its concurrency limit (max_requests)",
                       "overloaded", "1");
      case upstream::Admission::MustWait:
        break;
    }
    upstream::Waiter w;
    w.priority = ctx.route->priority;
    if (!gate.enqueue(w, max_pending)) {
      stats.count(stats::ShedReason::QueueFull);
      co_return fail(503, "model `" + model.name + "` is overloaded and its queue is full",
                     "overloaded", "1");
    }
    if (co_await waitFor(ctx, model, w, cb.max_queue_time)) co_return Outcome::Admitted;
    if (w.shed) {
      stats.count(stats::ShedReason::Displaced);
      co_return fail(503, "model `" + model.name + "` is overloaded; higher-priority requests go first",
                     "overloaded", "1");
    }
    gate.cancel(w);
    if (clientLeft(ctx)) co_return Outcome::Done;
    stats.count(stats::ShedReason::QueueTimeout);
    co_return fail(503, "model `" + model.name + "` is overloaded (waited too long for a slot)",
                   "overloaded", "1");
  }

  // One model: admission, then attempts on endpoints its load balancer
  // picks. Every attempt's outcome feeds outlier detection.
  awaitable<Outcome> tryModel(StreamContext& ctx, const config::ModelConfig& model) {
    auto& worker = *ctx.worker;
    tried_.assign(model.endpoints.size(), false);
    retries_left_ = ctx.route->retry.attempts;
    // Residency is a hard filter: no endpoint outside the allowed regions.
    if (!untriedEndpoint(ctx, model))
      co_return decide(ctx, model, Failure::NoEndpoint, false) == Outcome::Fallback
          ? Outcome::Fallback
          : fail(503, "no endpoint of model `" + model.name + "` is in an allowed region",
                 "residency_unsatisfiable");
    // A model whose every endpoint rests after 429s is itself rate limited:
    // the client (or a fallback) hears so without another request upstream.
    {
      Clock::time_point until = Clock::time_point::max();
      for (const auto& ep : model.endpoints) until = std::min(until, worker.endpointStates().get(ep.key).cooldown_until);
      if (until > Clock::now()) {
        failure_ = LocalFailure{429, "model `" + model.name + "` is rate limited upstream", "upstream_rate_limited",
                                secondsUntil(until)};
        co_return next_fallback_ && next_fallback_->on_429 ? Outcome::Fallback : Outcome::Failed;
      }
    }
    auto& gate = worker.gate(model.stats_id);
    const auto queued_at = Clock::now();
    const Outcome admitted = co_await admit(ctx, model, gate);
    ctx.queue_time += Clock::now() - queued_at;
    if (admitted != Outcome::Admitted)
      co_return admitted == Outcome::Failed ? decide(ctx, model, Failure::Overload, false) : admitted;
    struct Slot {
      upstream::ModelGate& gate;
      ~Slot() { gate.release(); }
    } slot{gate};

    const bool balance = model.endpoints.size() > 1;
    const std::uint64_t hash = model.lb.policy == config::LbPolicy::ConsistentHash ? hashFor(ctx, model) : 0;
    for (unsigned attempt = 0;; ++attempt) {
      const int picked = upstream::pickEndpoint(model, worker.endpointStates(), worker.roundRobinCounter(model.index),
                                                worker.rng(), pickRequest(ctx, model, hash));
      if (picked < 0) co_return Outcome::Failed;  // decide() saw an untried endpoint, so not reached
      tried_[static_cast<std::size_t>(picked)] = true;
      const auto& ep = model.endpoints[static_cast<std::size_t>(picked)];
      ++ctx.upstream_attempts;
      ctx.upstream_address = ep.address;
      ctx.upstream_region = ep.region;
      auto& state = worker.endpointStates().get(ep.key);  // a stable reference
      // Load is tracked only where there is a choice to make.
      if (balance) ++state.outstanding;
      sent_outstanding_ = state.outstanding;
      attempt_ttft_ = -1;
      const auto attempt_start = Clock::now();
      upstream_status_ = 0;
      const bool h2 = model.upstream_h2 || (model.upstream_auto && state.alpn_h2);
      if (trace_) traceparent_ = trace_->beginAttempt(model.name, ep.address, ep.region, on_fallback_);
      Outcome o = h2 ? co_await exchangeH2(ctx, model, ep) : co_await exchange(ctx, model, ep, true);
      // A kept-alive connection the backend closed meanwhile is not a
      // failure of the endpoint: a fresh connection to it carries the
      // request again (exchange() allowed it), counted as a retry.
      if (o == Outcome::StaleConnection) {
        ++ctx.upstream_attempts;
        ++worker.stats().upstream_retries;
        auto& load = worker.routeLoad(ctx.route->stats_id);
        ++load.retries;
        ctx.error_source = filter::ErrorSource::None;
        o = co_await exchange(ctx, model, ep, /*pooled=*/false);
        --load.retries;
      }
      if (o == Outcome::SwitchToHttp2) o = co_await exchangeH2(ctx, model, ep);
      ctx.upstream_time += Clock::now() - attempt_start;
      if (trace_) trace_->endAttempt(upstream_status_, o == Outcome::Done ? std::string_view() : failure_.code);
      if (balance) {
        --state.outstanding;
        // How long it held a batch slot: what load_aware's queue wait goes by.
        if (o == Outcome::Done && attempt_ttft_ >= 0 && upstream_status_ < 400)
          upstream::recordCompletion(state, std::chrono::duration<double>(Clock::now() - attempt_start).count(),
                                     attempt_ttft_);
      }
      if (attempt > 0) --worker.routeLoad(ctx.route->stats_id).retries;
      if (o == Outcome::Done && clientLeft(ctx)) co_return o;  // says nothing about the endpoint
      // A 429, a context-length error or our own connection limit say
      // nothing bad about the endpoint.
      const bool ok = o == Outcome::Done ? upstream_status_ < 500 && ctx.error_source != filter::ErrorSource::Upstream
                                         : failed_with_ == Failure::Status429 || failed_with_ == Failure::ContextLength ||
                                               failed_with_ == Failure::Overload;
      if (balance && upstream::recordOutcome(model, worker.endpointStates(), static_cast<std::size_t>(picked), ok,
                                             upstream::Clock::now())) {
        ++worker.stats().upstream_ejections;
        spdlog::warn("outlier detection: ejecting {} of model {}", ep.address, model.name);
      }
      if (o != Outcome::Retry) co_return o;
      // Full-jitter exponential backoff, then another endpoint.
      --retries_left_;
      ++worker.stats().upstream_retries;
      ++worker.routeLoad(ctx.route->stats_id).retries;
      const auto& r = ctx.route->retry;
      const auto cap = std::min<std::chrono::milliseconds>(r.max_backoff, r.base_backoff * (1u << std::min(attempt, 16u)));
      const auto pause = std::chrono::milliseconds(std::uniform_int_distribution<long>(0, cap.count())(worker.rng()));
      if (pause.count() > 0) {
        asio::steady_timer timer(worker.io());
        timer.expires_after(budget(pause));
        cancel_.set(ctx, [&timer] { timer.cancel(); });
        co_await timer.async_wait(kTuple);
        cancel_.clear();
        if (clientLeft(ctx)) {
          --worker.routeLoad(ctx.route->stats_id).retries;
          co_return Outcome::Done;
        }
      }
      ctx.error_source = filter::ErrorSource::None;
    }
  }

  // A failure before the response reached the client, made by the proxy
  // (no usable upstream response): retry, fall back, or tell the client.
  Outcome failBeforeResponse(StreamContext& ctx, const config::ModelConfig& model, Failure f, UpstreamError e,
                             unsigned status, std::string message, const char* code, bool reached_model) {
    ctx.worker->stats().count(e);
    ctx.error_source = filter::ErrorSource::Upstream;  // also marks the endpoint as failed
    failed_with_ = f;
    failure_ = LocalFailure{status, std::move(message), code, {}};
    return decide(ctx, model, f, reached_model);
  }

  // Takes a connection-count slot for the model's circuit breaker; false
  // (with the failure decided) when the model is at its limit.
  bool takeConnectionSlot(StreamContext& ctx, const config::ModelConfig& model, Outcome& o) {
    auto& worker = *ctx.worker;
    if (worker.gate(model.stats_id)
            .openConnection(upstream::workerShare(model.circuit_breakers.max_connections, worker.workerCount())))
      return true;
    worker.stats().count(stats::ShedReason::MaxConnections);
    failed_with_ = Failure::Overload;
    failure_ = LocalFailure{503, "model `" + model.name + "` is at its connection limit (max_connections)",
                            "overloaded", "1"};
    ctx.error_source = filter::ErrorSource::Internal;
    o = decide(ctx, model, Failure::Overload, false);
    return false;
  }

  Outcome connectFailed(StreamContext& ctx, const config::ModelConfig& model, const std::string& why) {
    spdlog::debug("model {}: connection failed: {}", model.name, why);
    return failBeforeResponse(ctx, model, Failure::ConnectFailure, UpstreamError::ConnectFailure, 503,
                              "no endpoint of model `" + model.name + "` could be reached (" + why + ")",
                              "upstream_unavailable", false);
  }

  // A response head could not be read: why, as a failure.
  Outcome headFailed(StreamContext& ctx, const config::ModelConfig& model, bool timeout, bool closed,
                     const std::string& detail) {
    if (timeout && firstTokenLate())
      return failBeforeResponse(ctx, model, Failure::Timeout, UpstreamError::Timeout, 504,
                                "no first token in time", "upstream_first_token_timeout", true);
    if (timeout)
      return failBeforeResponse(ctx, model, Failure::Timeout, UpstreamError::Timeout, 504,
                                "upstream did not respond in time", "upstream_timeout", true);
    if (closed)
      return failBeforeResponse(ctx, model, Failure::Reset, UpstreamError::Reset, 502,
                                "upstream closed the connection before responding", "upstream_reset", true);
    return failBeforeResponse(ctx, model, Failure::Reset, UpstreamError::ProtocolError, 502,
                              "upstream sent an invalid response: " + detail, "upstream_protocol_error",
                              true);
  }

  // One HTTP/1.1 exchange on a pooled or new connection.
  awaitable<Outcome> exchange(StreamContext& ctx, const config::ModelConfig& model, const config::EndpointConfig& ep,
                              bool pooled) {
    auto& worker = *ctx.worker;
    auto& stats = worker.stats();
    failed_with_ = Failure::None;
    std::unique_ptr<UpstreamConnection> conn = pooled ? worker.upstreams().take(poolKey(*ctx.snapshot, model, ep)) : nullptr;
    const bool reused = conn != nullptr;
    if (pastDeadline())
      co_return failBeforeResponse(ctx, model, Failure::Timeout, UpstreamError::Timeout, 504,
                                   "upstream request timed out", "upstream_timeout", false);
    if (Outcome o; !takeConnectionSlot(ctx, model, o)) co_return o;
    struct Connection {
      upstream::ModelGate& gate;
      ~Connection() { gate.closeConnection(); }
    } counted{worker.gate(model.stats_id)};
    if (!conn) {
      conn = std::make_unique<UpstreamConnection>(worker.io().get_executor());
      cancel_.set(ctx, [tcp = &conn->stream.lower()] { tcp->cancel(); });
      const ConnectResult c = co_await connectUpstream(worker, *ctx.snapshot, model, ep, *conn, budget(model.connect_timeout));
      cancel_.clear();
      if (!c.ok && clientLeft(ctx)) co_return Outcome::Done;
      if (!c.ok) co_return connectFailed(ctx, model, c.error);
      ++stats.upstream_connections_opened;
      if (c.alpn == "h2") {
        // ALPN chose HTTP/2: this endpoint is served by streams from now on.
        worker.endpointStates().get(ep.key).alpn_h2 = true;
        co_return Outcome::SwitchToHttp2;
      }
    } else {
      ++stats.upstream_connections_reused;
    }
    ++stats.upstream_connections_active;
    // While this exchange runs, a client that leaves cancels it.
    cancel_.set(ctx, [tcp = &conn->stream.lower()] { tcp->cancel(); });
    struct Active {
      filter::CancelSlot& cancel;
      stats::WorkerStats& s;
      ~Active() {
        --s.upstream_connections_active;
        cancel.clear();
      }
    } active{cancel_, stats};

    head_.resize(host_at_);
    head_ += ep.address;
    head_ += "\r\n";
    if (!traceparent_.empty()) {
      head_ += "traceparent: ";
      head_ += traceparent_;
      head_ += "\r\n";
    }
    head_ += "\r\n";
    const auto idle = std::chrono::duration_cast<Clock::duration>(ctx.route->idle_timeout);
    conn->stream.lower().expires_after(budget(idle));
    const std::array<asio::const_buffer, 2> request{asio::buffer(head_), asio::buffer(body_)};
    auto [wec, wn] = co_await asio::async_write(conn->stream, request, kTuple);
    if (wec && clientLeft(ctx)) co_return Outcome::Done;
    if (wec) {
      // The kernel refused part of the request: the server cannot have it
      // whole, so a fresh connection may carry it (counted as a retry).
      if (reused) co_return Outcome::StaleConnection;
      co_return failBeforeResponse(ctx, model, Failure::Reset, UpstreamError::Reset, 502,
                                   "upstream connection failed: " + wec.message(), "upstream_reset", true);
    }
    const auto sent_at = Clock::now();
    if (ctx.route->first_token_timeout.count() > 0) first_token_at_ = sent_at + ctx.route->first_token_timeout;

    http::response_parser<http::buffer_body> parser;
    parser.header_limit(64 * 1024);
    parser.body_limit(boost::none);  // responses are streamed, never held
    if (ctx.request.method == "HEAD") parser.skip(true);
    conn->stream.lower().expires_after(readBudget(idle, false));
    auto [hec, hn] = co_await http::async_read_header(conn->stream, conn->buffer, parser, kTuple);
    if (hec && clientLeft(ctx)) co_return Outcome::Done;
    if (hec) {
      const bool closed = hec == http::error::end_of_stream || hec == asio::error::eof ||
                          hec == asio::error::connection_reset;
      if (reused && closed && !parser.got_some() && mayReplayAfterSend(ctx)) {
        --retries_left_;
        co_return Outcome::StaleConnection;
      }
      co_return headFailed(ctx, model, hec == beast::error::timeout, closed, hec.message());
    }
    H1Source source{*conn, parser};
    const Outcome o = co_await relay(ctx, model, ep, source, sent_at);
    // keep_alive() is false after `Connection: close` (or an HTTP/1.0
    // answer without keep-alive): such a connection is never reused.
    if (o == Outcome::Done && parser.is_done() && parser.keep_alive() && conn->buffer.size() == 0 &&
        ctx.error_source != filter::ErrorSource::Upstream && !clientLeft(ctx)) {
      conn->stream.lower().expires_never();
      const auto keep_alive = parser.get()[http::field::keep_alive];
      worker.upstreams().put(poolKey(*ctx.snapshot, model, ep), std::move(conn),
                             proxy::keepAliveFor(model.upstream_idle_timeout, {keep_alive.data(), keep_alive.size()}));
    }
    co_return o;
  }

  // One HTTP/2 exchange: a stream on a shared connection to the endpoint
  // (opened when none has room).
  awaitable<Outcome> exchangeH2(StreamContext& ctx, const config::ModelConfig& model, const config::EndpointConfig& ep) {
    auto& worker = *ctx.worker;
    auto& stats = worker.stats();
    failed_with_ = Failure::None;
    if (pastDeadline())
      co_return failBeforeResponse(ctx, model, Failure::Timeout, UpstreamError::Timeout, 504,
                                   "upstream request timed out", "upstream_timeout", false);
    // As for HTTP/1.1, the circuit breaker counts upstream streams in use.
    if (Outcome o; !takeConnectionSlot(ctx, model, o)) co_return o;
    struct Slot {
      upstream::ModelGate& gate;
      ~Slot() { gate.closeConnection(); }
    } slot{worker.gate(model.stats_id)};
    const std::uint64_t key = poolKey(*ctx.snapshot, model, ep);
    std::shared_ptr<proxy::UpstreamH2Session> session = worker.h2Upstreams().find(key);
    if (session) {
      ++stats.upstream_connections_reused;
    } else {
      UpstreamConnection conn(worker.io().get_executor());
      cancel_.set(ctx, [tcp = &conn.stream.lower()] { tcp->cancel(); });
      const ConnectResult c = co_await connectUpstream(worker, *ctx.snapshot, model, ep, conn, budget(model.connect_timeout));
      cancel_.clear();
      if (clientLeft(ctx)) co_return Outcome::Done;
      if (!c.ok) co_return connectFailed(ctx, model, c.error);
      if (conn.stream.tls() && c.alpn != "h2") {
        worker.endpointStates().get(ep.key).alpn_h2 = false;
        co_return connectFailed(ctx, model, "the server did not agree to HTTP/2 (ALPN)");
      }
      ++stats.upstream_connections_opened;
      conn.stream.lower().expires_never();
      session = std::make_shared<proxy::UpstreamH2Session>(std::move(conn.stream));
      session->start();
      worker.h2Upstreams().add(key, session);
      if (!co_await session->waitReady(budget(model.connect_timeout))) {
        if (clientLeft(ctx)) co_return Outcome::Done;
        co_return connectFailed(ctx, model, "no HTTP/2 SETTINGS from the server");
      }
    }
    struct Active {
      stats::WorkerStats& s;
      filter::CancelSlot& cancel;
      ~Active() {
        --s.upstream_connections_active;
        cancel.clear();
      }
    } active{stats, cancel_};
    ++stats.upstream_connections_active;

    auto stream = session->open(h2RequestHeaders(ctx, ep, model.upstream_tls.enabled()), body_);
    if (!stream)
      co_return failBeforeResponse(ctx, model, Failure::ConnectFailure, UpstreamError::ConnectFailure, 503,
                                   "no endpoint of model `" + model.name + "` could take the request",
                                   "upstream_unavailable", false);
    cancel_.set(ctx, [stream] { stream->cancel(); });
    const auto sent_at = Clock::now();
    if (ctx.route->first_token_timeout.count() > 0) first_token_at_ = sent_at + ctx.route->first_token_timeout;
    const auto idle = std::chrono::duration_cast<Clock::duration>(ctx.route->idle_timeout);
    // The response head.
    while (!stream->headers_done && !stream->reset && !stream->ended) {
      if (!co_await waitChange(*stream, readBudget(idle, false))) {
        stream->cancel();
        if (clientLeft(ctx)) co_return Outcome::Done;
        co_return headFailed(ctx, model, true, false, {});
      }
    }
    if (clientLeft(ctx)) co_return Outcome::Done;
    if (!stream->headers_done) {
      // REFUSED_STREAM: the server did not process it (over its stream
      // limit before its SETTINGS arrived, or going away); as safe to send
      // elsewhere as a connection that failed.
      if (stream->error_code == 0x7) co_return connectFailed(ctx, model, "stream refused");
      co_return headFailed(ctx, model, false, true, {});
    }
    H2Source source{*session, *stream};
    co_return co_await relay(ctx, model, ep, source, sent_at);
  }

  // `tls`: the connection to the endpoint is TLS, so :scheme is https.
  proxy::HeaderPairs h2RequestHeaders(const StreamContext& ctx, const config::EndpointConfig& ep, bool tls) const {
    proxy::HeaderPairs h;
    h.reserve(ctx.request.headers.fields().size() + 8);
    h.emplace_back(":method", ctx.request.method);
    h.emplace_back(":scheme", tls ? "https" : "http");
    h.emplace_back(":authority", ep.address);
    h.emplace_back(":path", ctx.request.target);
    std::string_view forwarded_for;
    const std::string_view connection = ctx.request.headers.get("connection").value_or("");
    const auto& cred = ctx.target_model->upstream_credential;
    const auto secret = credentialFor(ctx, *ctx.target_model);
    if (secret) h.emplace_back(cred.header, cred.prefix + *secret);
    for (const auto& [name, value] : ctx.target_model->upstream_headers) h.emplace_back(name, value);
    for (const auto& [name, value] : ctx.request.headers.fields()) {
      if (secret && filter::equalsIgnoreCase(name, cred.header)) continue;
      if (trace_ && isTraceHeader(name)) continue;
      if (!ctx.target_model->upstream_headers.empty() && ctx.target_model->setsHeader(name)) continue;
      // `te: trailers` is the one hop-by-hop field HTTP/2 keeps (gRPC needs it).
      const bool te_trailers = filter::equalsIgnoreCase(name, "te") && filter::equalsIgnoreCase(value, "trailers");
      if ((!te_trailers && proxy::isHopByHop(name)) || filter::equalsIgnoreCase(name, "host") ||
          filter::equalsIgnoreCase(name, "content-length") || filter::equalsIgnoreCase(name, "expect") ||
          filter::equalsIgnoreCase(name, "x-request-id") || filter::equalsIgnoreCase(name, "x-forwarded-client-cert") ||
          (!connection.empty() && namedInConnection(connection, name)))
        continue;
      if (filter::equalsIgnoreCase(name, "x-forwarded-for")) {
        forwarded_for = value;
        continue;
      }
      std::string lower = name;
      for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      h.emplace_back(std::move(lower), value);
    }
    h.emplace_back("x-forwarded-for",
                   forwarded_for.empty() ? ctx.client_address : std::string(forwarded_for) + ", " + ctx.client_address);
    h.emplace_back("x-request-id", ctx.request_id);
    if (!ctx.peer_identity.empty()) h.emplace_back("x-forwarded-client-cert", "URI=" + common::xfccValue(ctx.peer_identity));
    if (!traceparent_.empty()) h.emplace_back("traceparent", traceparent_);
    if (trace_ && !trace_->tracestate.empty()) h.emplace_back("tracestate", trace_->tracestate);
    if (!body_.empty()) h.emplace_back("content-length", std::to_string(body_.size()));
    return h;
  }

  // Waits for news on an HTTP/2 stream; false when `limit` passed first.
  awaitable<bool> waitChange(proxy::UpstreamH2Stream& stream, Clock::duration limit) {
    if (limit <= Clock::duration::zero()) co_return false;
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer timer(co_await asio::this_coro::executor);
    timer.expires_after(limit);
    stream.changed.reset();
    auto r = co_await (stream.changed.wait() || timer.async_wait(kTuple));
    co_return r.index() == 0;
  }

  // What the relay needs from an upstream response, per protocol.
  enum class ReadState { Ok, Timeout, Reset };
  struct ReadResult {
    ReadState state = ReadState::Ok;
    std::size_t n = 0;
    bool end = false;
  };

  struct H1Source {
    UpstreamConnection& conn;
    http::response_parser<http::buffer_body>& parser;
    unsigned status() const { return parser.get().result_int(); }
    std::string_view reason() const { return {parser.get().reason().data(), parser.get().reason().size()}; }
    std::string_view header(std::string_view name) const {
      auto it = parser.get().find(name);
      if (it == parser.get().end()) return {};
      return std::string_view(it->value().data(), it->value().size());
    }
    template <typename F>
    void forEachHeader(F&& f) const {
      for (const auto& field : parser.get())
        f(std::string_view(field.name_string().data(), field.name_string().size()),
          std::string_view(field.value().data(), field.value().size()));
    }
    std::optional<std::uint64_t> contentLength() const {
      if (auto cl = parser.content_length()) return *cl;
      return std::nullopt;
    }
    bool done() const { return parser.is_done(); }
    const proxy::HeaderPairs* trailers() const { return nullptr; }
    awaitable<ReadResult> read(char* buf, std::size_t cap, Clock::duration limit) {
      auto& body = parser.get().body();
      body.data = buf;
      body.size = cap;
      conn.stream.lower().expires_after(limit);
      auto [ec, n] = co_await http::async_read_some(conn.stream, conn.buffer, parser, kTuple);
      if (ec == http::error::need_buffer) ec = {};
      // The parser stops after each chunk; the bytes already received may
      // hold more (SSE events that arrived together). Parse those into the
      // same buffer, without waiting for the socket, so they go out in one
      // write.
      while (!ec && !parser.is_done() && body.size > 0 && conn.buffer.size() > 0) {
        boost::system::error_code pec;
        const std::size_t used = parser.put(conn.buffer.data(), pec);
        conn.buffer.consume(used);
        if (pec == http::error::need_more || pec == http::error::need_buffer || (!pec && used == 0)) break;
        ec = pec;
      }
      ReadResult r;
      if (ec) r.state = ec == beast::error::timeout ? ReadState::Timeout : ReadState::Reset;
      r.n = cap - parser.get().body().size;
      r.end = parser.is_done();
      co_return r;
    }
  };

  struct H2Source {
    proxy::UpstreamH2Session& session;
    proxy::UpstreamH2Stream& stream;
    std::size_t taken = 0;  // of stream.data
    unsigned status() const { return stream.status; }
    std::string_view reason() const { return {}; }
    std::string_view header(std::string_view name) const {
      for (const auto& [n, v] : stream.headers)
        if (filter::equalsIgnoreCase(n, name)) return v;
      return {};
    }
    template <typename F>
    void forEachHeader(F&& f) const {
      for (const auto& [n, v] : stream.headers) f(std::string_view(n), std::string_view(v));
    }
    std::optional<std::uint64_t> contentLength() const {
      auto v = header("content-length");
      std::uint64_t n = 0;
      if (v.empty() || std::from_chars(v.data(), v.data() + v.size(), n).ec != std::errc()) return std::nullopt;
      return n;
    }
    bool done() const { return stream.ended && stream.data.size() == taken; }
    const proxy::HeaderPairs* trailers() const { return stream.trailers.empty() ? nullptr : &stream.trailers; }
    awaitable<ReadResult> read(char* buf, std::size_t cap, Clock::duration limit) {
      ReadResult r;
      for (;;) {
        if (stream.data.size() > taken) {
          r.n = std::min(cap, stream.data.size() - taken);
          std::memcpy(buf, stream.data.data() + taken, r.n);
          taken += r.n;
          if (taken == stream.data.size()) {
            stream.data.clear();
            taken = 0;
          }
          session.consumed(stream.id, r.n);  // open the window by what was taken
          r.end = done();
          co_return r;
        }
        if (stream.ended) {
          r.end = true;
          co_return r;
        }
        if (stream.reset) {
          r.state = ReadState::Reset;
          co_return r;
        }
        if (limit <= Clock::duration::zero()) {
          r.state = ReadState::Timeout;
          co_return r;
        }
        using namespace asio::experimental::awaitable_operators;
        asio::steady_timer timer(co_await asio::this_coro::executor);
        timer.expires_after(limit);
        stream.changed.reset();
        auto w = co_await (stream.changed.wait() || timer.async_wait(kTuple));
        if (w.index() == 1) {
          r.state = ReadState::Timeout;
          stream.cancel();
          co_return r;
        }
      }
    }
  };

  static bool holdHead(const StreamContext& ctx, bool sse) {
    const auto hold = ctx.route->head_hold;
    return hold == config::HeadHold::Always || (hold == config::HeadHold::Streaming && (ctx.stream || sse));
  }

  // Everything after the response head, for either protocol: outcome
  // bookkeeping, the retry/fallback decision on an error status, then the
  // head, the body chunk by chunk and the trailers to the client.
  template <typename Source>
  awaitable<Outcome> relay(StreamContext& ctx, const config::ModelConfig& model, const config::EndpointConfig& ep,
                           Source& source, Clock::time_point sent_at) {
    auto& worker = *ctx.worker;
    auto& stats = worker.stats();
    const auto idle = std::chrono::duration_cast<Clock::duration>(ctx.route->idle_timeout);
    upstream_status_ = source.status();
    auto& health = worker.endpointStates().get(ep.key);
    if (auto text = source.header("endpoint-load-metrics"); !text.empty()) {
      upstream::LoadReport report;
      if (upstream::parseLoadReport(text, report)) upstream::applyLoadReport(health, report, Clock::now());
    }
    if (upstream_status_ == 429) coolDown(worker, ep, source.header("retry-after"));

    struct RelayBuffer {
      proxy::Worker& worker;
      std::unique_ptr<char[]> data = worker.takeRelayBuffer();
      ~RelayBuffer() { worker.returnRelayBuffer(std::move(data)); }
    } buf{worker};
    constexpr std::size_t kBufSize = proxy::Worker::kRelayBufferSize;

    // A 400 may be a context-length error a fallback takes over: hold the
    // (small) error body to look.
    std::string held;
    if (upstream_status_ == 400 && next_fallback_ && next_fallback_->on_context_length) {
      while (!source.done() && held.size() < 64 * 1024) {
        const ReadResult r = co_await source.read(buf.data.get(), kBufSize, budget(idle));
        held.append(buf.data.get(), r.n);
        if (r.state != ReadState::Ok || r.end) break;
      }
      if (held.find("context_length_exceeded") != std::string::npos) {
        failed_with_ = Failure::ContextLength;
        failure_ = LocalFailure{400, "the prompt does not fit model `" + model.name + "`", "context_length_exceeded", {}};
        co_return decide(ctx, model, Failure::ContextLength, true);
      }
    }
    // Nothing has reached the client yet: a failure a retry or the next
    // fallback takes over is not forwarded (the connection is dropped, not
    // drained).
    if (upstream_status_ == 429 || upstream_status_ >= 500) {
      const Failure f = upstream_status_ == 429 ? Failure::Status429 : Failure::Status5xx;
      failed_with_ = f;
      failure_ = LocalFailure{upstream_status_, "model `" + model.name + "` answered " + std::to_string(upstream_status_),
                              f == Failure::Status429 ? "upstream_rate_limited" : "upstream_error",
                              std::string(source.header("retry-after"))};
      // A 429 was refused, not processed: safe to send elsewhere.
      const Outcome o = decide(ctx, model, f, f != Failure::Status429);
      if (o != Outcome::Failed) {
        ctx.error_source = filter::ErrorSource::Upstream;  // do not pool this connection
        co_return o;
      }
    }
    filter::ResponseHead head;
    head.status = upstream_status_;
    head.reason.assign(source.reason());
    // An inner hop (a node proxy) names the model it served in its own
    // `x-infermesh-model`: the client gets one, this hop's, and the inner
    // ones move to `x-infermesh-hops`, nearest first.
    std::string inner_hops;
    source.forEachHeader([&](std::string_view name, std::string_view value) {
      if (proxy::isHopByHop(name) || filter::equalsIgnoreCase(name, "content-length") ||
          filter::equalsIgnoreCase(name, "x-request-id"))
        return;
      if (filter::equalsIgnoreCase(name, "x-infermesh-model") || filter::equalsIgnoreCase(name, "x-infermesh-hops")) {
        if (!inner_hops.empty()) inner_hops += ", ";
        inner_hops += value;
        return;
      }
      head.headers.add(std::string(name), std::string(value));
    });
    head.headers.add("x-infermesh-model", model.name);
    if (!inner_hops.empty()) head.headers.add("x-infermesh-hops", std::move(inner_hops));
    const bool sse = head.headers.get("content-type").value_or("").starts_with("text/event-stream");
    const bool all_held = source.done();
    const bool bodyless = all_held && held.empty() && source.trailers() == nullptr;
    // Engines send the head at once and the first token much later; until
    // that first body byte the client has nothing it could not lose, so a
    // held head keeps a failure in between retryable (it then goes out
    // with the first chunk).
    bool head_sent = !held.empty() || all_held || !holdHead(ctx, sse);
    if (head_sent) {
      if (!co_await ctx.downstream->sendHeaders(head, bodyless, source.contentLength())) co_return Outcome::Done;
      if (!held.empty() && !co_await ctx.downstream->sendBody(held, all_held && source.trailers() == nullptr))
        co_return Outcome::Done;
    }
    bool got_first_byte = !held.empty();

    // Each read is forwarded as soon as it arrives (an SSE event is not held
    // back for the next), and the next read waits for the client to take it.
    while (!source.done()) {
      const ReadResult r = co_await source.read(buf.data.get(), kBufSize, readBudget(idle, got_first_byte));
      if (r.state != ReadState::Ok && clientLeft(ctx)) co_return Outcome::Done;  // nobody to tell
      if (r.state != ReadState::Ok && !head_sent) {
        // The request reached the model: decide() replays it only where
        // that is allowed; a fallback naming the failure may take it.
        if (r.state == ReadState::Timeout) co_return headFailed(ctx, model, true, false, {});
        co_return failBeforeResponse(ctx, model, Failure::Reset, UpstreamError::Reset, 502,
                                     "model `" + model.name + "` lost the connection before its first byte",
                                     "upstream_reset", true);
      }
      if (r.state != ReadState::Ok) {
        const bool timeout = r.state == ReadState::Timeout;
        stats.count(timeout ? UpstreamError::Timeout : UpstreamError::Reset);
        ctx.error_source = filter::ErrorSource::Upstream;
        ctx.error_reason = !timeout                             ? "upstream_reset_mid_stream"
                           : !got_first_byte && firstTokenLate() ? "upstream_first_token_timeout"
                           : pastDeadline()                      ? "upstream_request_timeout"
                                                                 : "upstream_timeout_mid_stream";
        if (sse)
          co_await ctx.downstream->sendBody(
              sseErrorEvent(timeout ? "the model stopped responding" : "the model connection was lost", ctx.error_reason),
              false);
        ctx.downstream->abort();
        co_return Outcome::Done;
      }
      if (r.n == 0 && !r.end) continue;
      if (!got_first_byte && r.n > 0) {
        // Time to first token: what EWMA balancing and "fastest" go by.
        const auto now = Clock::now();
        const double ttft = std::chrono::duration<double>(now - sent_at).count();
        upstream::recordFirstByte(health, ttft, sent_outstanding_, now);
        attempt_ttft_ = ttft;
        upstream::recordLatency(worker.modelLatency(model.stats_id), ttft, now);
        got_first_byte = true;
      }
      const bool end_body = r.end && source.trailers() == nullptr;
      if (!head_sent) {
        head_sent = true;
        const bool empty = end_body && r.n == 0;
        if (!co_await ctx.downstream->sendHeaders(head, empty, source.contentLength())) co_return Outcome::Done;
        if (empty) break;
      }
      if ((r.n > 0 || end_body) &&
          !co_await ctx.downstream->sendBody(std::string_view(buf.data.get(), r.n), end_body))
        co_return Outcome::Done;
    }
    if (!head_sent && !co_await ctx.downstream->sendHeaders(head, source.trailers() == nullptr, source.contentLength()))
      co_return Outcome::Done;
    if (const auto* trailers = source.trailers()) {
      filter::HeaderList t;
      for (const auto& [n, v] : *trailers) t.add(n, v);
      if (!co_await ctx.downstream->sendTrailers(t)) co_return Outcome::Done;
    }
    co_return Outcome::Done;
  }

  std::string body_;
  bool grpc_ = false;
  filter::CancelSlot cancel_;  // what a client leaving cancels right now
  std::string head_;
  std::size_t host_at_ = 0;    // in head_: where the endpoint's host goes
  std::size_t length_at_ = 0;  // in head_: where content-length starts
  const config::FallbackConfig* next_fallback_ = nullptr;
  unsigned upstream_status_ = 0;
  std::int64_t sent_outstanding_ = 1;  // the endpoint's requests in flight (ours) when this attempt went out
  double attempt_ttft_ = -1;           // this attempt's time to first byte, seconds; -1: none yet
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point first_token_at_ = Clock::time_point::max();
  // Per model attempt.
  std::vector<bool> tried_;
  unsigned retries_left_ = 0;
  Failure failed_with_ = Failure::None;
  LocalFailure failure_;
  // The request's trace when the telemetry filter traces it: each attempt
  // gets its own span and `traceparent` (proxy/tracing/stream_trace.h).
  tracing::StreamTrace* trace_ = nullptr;
  std::string traceparent_;  // the current attempt's
  bool on_fallback_ = false;
  std::vector<std::string_view> request_regions_;
};

class RouterFactory final : public filter::FilterFactory {
 public:
  std::unique_ptr<filter::StreamFilter> create() const override { return std::make_unique<RouterFilter>(); }
  bool terminal() const override { return true; }
};

std::shared_ptr<const filter::FilterFactory> buildRouter(std::string_view config_json, std::string& error) {
  if (config_json != "{}" && !config_json.empty()) {
    error = "the router filter takes no config";
    return nullptr;
  }
  return std::make_shared<RouterFactory>();
}

const filter::Registration kRegistered{"router", &buildRouter};

}  // namespace

}  // namespace infermesh::router
