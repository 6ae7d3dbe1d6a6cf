#include "filters/router/router_filter.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/asio/detached.hpp>
#include <boost/beast/http.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <charconv>

#include "filters/router/model_extractor.h"
#include "filters/router/route_matcher.h"
#include "proxy/config/snapshot.h"
#include "proxy/server/downstream.h"
#include "proxy/server/http_util.h"
#include "proxy/server/worker.h"
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

class RouterFilter final : public filter::StreamFilter {
 public:
  FilterStatus onRequestHeaders(StreamContext& ctx, bool end_stream) override {
    if (end_stream) start(ctx);
    return FilterStatus::Continue;
  }

  FilterStatus onRequestBody(StreamContext& ctx, std::string_view chunk, bool end_stream) override {
    // The model is in the JSON body, so the body is held until complete;
    // the listener's body limit bounds it.
    body_.append(chunk);
    if (end_stream) start(ctx);
    return FilterStatus::Continue;
  }

 private:
  enum class Outcome {
    Done,             // the client has its answer (or is gone)
    ConnectFailed,    // this endpoint could not be reached
    StaleConnection,  // a pooled connection turned out closed
    Fallback,         // failed in a way the next fallback takes over
  };

  // The connection cancelled the exchange because the client went away.
  static bool clientLeft(const StreamContext& ctx) { return ctx.error_source == filter::ErrorSource::Downstream; }

  void reject(StreamContext& ctx, DownstreamError e, unsigned status, std::string message, const char* type,
              const char* code) {
    ctx.worker->stats().count(e);
    ctx.sendLocalReply(status, std::move(message), type, code);
  }

  void start(StreamContext& ctx) {
    if (!body_.empty()) {
      thread_local ModelExtractor extractor;
      ModelExtractor::ensurePadding(body_);
      BodyFields fields;
      if (auto err = extractor.extract(body_, fields); err != ExtractError::None)
        return reject(ctx, DownstreamError::InvalidJson, 400, describe(err), "invalid_request_error", "invalid_json");
      ctx.model = std::move(fields.model);
      ctx.stream = fields.stream;
    }
    const auto* route = matchRoute(*ctx.snapshot, ctx.listener->index, ctx.request, ctx.model);
    if (route == nullptr)
      return reject(ctx, DownstreamError::NoRoute, 404,
                    "no route for " + ctx.request.method + " " + std::string(ctx.request.path()) +
                        (ctx.model.empty() ? "" : " with model \"" + ctx.model + "\""),
                    "invalid_request_error", "no_route");
    ctx.route = route;
    const config::ModelConfig* target = route->target;
    if (target == nullptr) {
      if (ctx.model.empty())
        return reject(ctx, DownstreamError::MissingModel, 400, "request body must name a \"model\"",
                      "invalid_request_error", "missing_model");
      target = ctx.snapshot->findModel(ctx.model);
      if (target == nullptr)
        return reject(ctx, DownstreamError::UnknownModel, 404, "The model `" + ctx.model + "` does not exist",
                      "invalid_request_error", "model_not_found");
    }
    ctx.target_model = target;
    // The backend may know the model under another name (alias, upstreamModel).
    if (!ctx.model.empty() && ctx.model != target->upstream_model)
      ModelExtractor::rewriteModel(body_, target->upstream_model);
    asio::co_spawn(ctx.worker->io(), forward(ctx), asio::detached);
  }

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

  // A 429 with Retry-After (seconds) rests the endpoint that long: the load
  // balancer sends other requests elsewhere meanwhile (capped at 5 minutes).
  static void coolDown(proxy::Worker& worker, const config::EndpointConfig& ep, std::string_view retry_after) {
    unsigned seconds = 0;
    auto [p, ec] = std::from_chars(retry_after.data(), retry_after.data() + retry_after.size(), seconds);
    if (ec != std::errc() || seconds == 0) return;
    auto& health = worker.endpointStates().get(ep.key);
    health.ejected_until =
        std::max(health.ejected_until, upstream::Clock::now() + std::chrono::seconds(std::min(seconds, 300u)));
  }

  // An SSE client cannot see a status after the stream started; it gets an
  // explicit error event before the stream is cut.
  static std::string sseErrorEvent(const std::string& message, const std::string& code) {
    filter::LocalReply reply{0, message, "upstream_error", code, {}};
    return "event: error\ndata: " + proxy::openAiErrorJson(reply) + "\n\n";
  }

  // The upstream request head minus `host` (set per endpoint). Written by
  // hand, like the downstream response: a relay only copies fields, and one
  // string plus the body make a single gather write.
  void buildRequest(const StreamContext& ctx) {
    std::string& h = head_;
    h.reserve(512);
    h += ctx.request.method;
    h += ' ';
    h += ctx.request.target;
    h += " HTTP/1.1\r\n";
    std::string_view forwarded_for;
    const std::string_view connection = ctx.request.headers.get("connection").value_or("");
    for (const auto& [name, value] : ctx.request.headers.fields()) {
      if (proxy::isHopByHop(name) || filter::equalsIgnoreCase(name, "host") ||
          filter::equalsIgnoreCase(name, "content-length") || filter::equalsIgnoreCase(name, "expect") ||
          filter::equalsIgnoreCase(name, "x-request-id") || (!connection.empty() && namedInConnection(connection, name)))
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
    if (!body_.empty() || ctx.request.method == "POST" || ctx.request.method == "PUT") {
      h += "content-length: ";
      h += std::to_string(body_.size());
      h += "\r\n";
    }
    h += "host: ";
    host_at_ = h.size();
  }

  awaitable<void> forward(StreamContext& ctx) {
    struct Finish {
      proxy::DownstreamStream& ds;
      ~Finish() { ds.finish(); }
    } finish{*ctx.downstream};
    const auto& route = *ctx.route;
    if (route.request_timeout.count() > 0) deadline_ = ctx.start + route.request_timeout;
    buildRequest(ctx);
    // The route's model, then its fallbacks in order: a failure that the
    // next fallback names moves on to it, as long as nothing has been sent
    // to the client yet.
    for (std::size_t next = 0;; ++next) {
      next_fallback_ = next < route.fallbacks.size() ? &route.fallbacks[next] : nullptr;
      const Outcome o = co_await tryModel(ctx, *ctx.target_model);
      if (o == Outcome::Done) co_return;
      if (o == Outcome::ConnectFailed && !(next_fallback_ && next_fallback_->on_connect_failure)) {
        ctx.error_source = filter::ErrorSource::Upstream;
        ctx.sendLocalReply(503, "no endpoint of model `" + ctx.target_model->name + "` could be reached",
                           "upstream_error", "upstream_unavailable");
        co_await ctx.downstream->sendLocalReply();
        co_return;
      }
      ++ctx.worker->stats().upstream_fallbacks;
      spdlog::debug("fallback from model {} to {}", ctx.target_model->name, next_fallback_->model->name);
      ctx.target_model = next_fallback_->model;
      ctx.error_source = filter::ErrorSource::None;
      ctx.local_reply.reset();
      ModelExtractor::rewriteModel(body_, ctx.target_model->upstream_model);
      head_.clear();
      buildRequest(ctx);
    }
  }

  // One model: its load balancer picks the endpoint; a connection that
  // cannot be made is retried once on another one. Every attempt's outcome
  // feeds outlier detection.
  awaitable<Outcome> tryModel(StreamContext& ctx, const config::ModelConfig& model) {
    auto& worker = *ctx.worker;
    std::vector<bool> tried(model.endpoints.size(), false);
    const std::size_t attempts = std::min<std::size_t>(model.endpoints.size(), 2);
    for (std::size_t i = 0; i < attempts; ++i) {
      const int picked = upstream::pickEndpoint(model, worker.endpointStates(), worker.roundRobinCounter(model.index),
                                                worker.rng(), tried, upstream::Clock::now());
      if (picked < 0) break;
      tried[static_cast<std::size_t>(picked)] = true;
      const auto& ep = model.endpoints[static_cast<std::size_t>(picked)];
      if (i > 0) ++worker.stats().upstream_retries;
      ++ctx.upstream_attempts;
      ctx.upstream_address = ep.address;
      // Load is tracked only where there is a choice to make.
      const bool balance = model.endpoints.size() > 1;
      if (balance) ++worker.endpointStates().get(ep.key).outstanding;
      upstream_status_ = 0;
      Outcome o = co_await exchange(ctx, ep, /*pooled=*/true);
      // A kept-alive connection the backend closed meanwhile is not a
      // failure of the endpoint: try a fresh connection to it.
      if (o == Outcome::StaleConnection) o = co_await exchange(ctx, ep, /*pooled=*/false);
      if (balance) --worker.endpointStates().get(ep.key).outstanding;
      if (o == Outcome::Done && clientLeft(ctx)) co_return o;  // says nothing about the endpoint
      const bool ok = o != Outcome::ConnectFailed && ctx.error_source != filter::ErrorSource::Upstream &&
                      upstream_status_ < 500;
      if (balance && upstream::recordOutcome(model, worker.endpointStates(), static_cast<std::size_t>(picked), ok,
                                             upstream::Clock::now())) {
        ++worker.stats().upstream_ejections;
        spdlog::warn("outlier detection: ejecting {} of model {}", ep.address, model.name);
      }
      if (o == Outcome::Done || o == Outcome::Fallback) co_return o;
    }
    co_return Outcome::ConnectFailed;
  }

  awaitable<Outcome> failBeforeResponse(StreamContext& ctx, UpstreamError e, unsigned status, std::string message,
                                        const char* code) {
    ctx.worker->stats().count(e);
    ctx.error_source = filter::ErrorSource::Upstream;  // also marks the endpoint as failed
    if (next_fallback_ && ((e == UpstreamError::Timeout && next_fallback_->on_timeout) ||
                           (e != UpstreamError::Timeout && next_fallback_->on_5xx)))
      co_return Outcome::Fallback;
    ctx.sendLocalReply(status, std::move(message), "upstream_error", code);
    co_await ctx.downstream->sendLocalReply();
    co_return Outcome::Done;
  }

  awaitable<Outcome> exchange(StreamContext& ctx, const config::EndpointConfig& ep, bool pooled) {
    auto& worker = *ctx.worker;
    auto& stats = worker.stats();
    std::unique_ptr<UpstreamConnection> conn = pooled ? worker.upstreams().take(ep.key) : nullptr;
    const bool reused = conn != nullptr;
    if (deadline_ <= Clock::now())
      co_return co_await failBeforeResponse(ctx, UpstreamError::Timeout, 504, "upstream request timed out",
                                            "upstream_timeout");
    if (!conn) {
      conn = std::make_unique<UpstreamConnection>(worker.io().get_executor());
      boost::system::error_code addr_ec;
      asio::ip::tcp::endpoint endpoint(asio::ip::make_address(ep.ip, addr_ec), ep.port);
      conn->stream.expires_after(budget(ctx.target_model->connect_timeout));
      auto [ec] = co_await conn->stream.async_connect(endpoint, kTuple);
      if (ec) {
        stats.count(UpstreamError::ConnectFailure);
        co_return Outcome::ConnectFailed;
      }
      conn->stream.socket().set_option(asio::ip::tcp::no_delay(true), ec);
      ++stats.upstream_connections_opened;
    } else {
      ++stats.upstream_connections_reused;
    }
    ++stats.upstream_connections_active;
    // While this exchange runs, a client that leaves cancels it.
    ctx.on_downstream_gone = [stream = &conn->stream] { stream->cancel(); };
    struct Active {
      StreamContext& ctx;
      stats::WorkerStats& s;
      ~Active() {
        --s.upstream_connections_active;
        ctx.on_downstream_gone = nullptr;
      }
    } active{ctx, stats};

    head_.resize(host_at_);
    head_ += ep.address;
    head_ += "\r\n\r\n";
    const auto idle = std::chrono::duration_cast<Clock::duration>(ctx.route->idle_timeout);
    if (ctx.route->first_token_timeout.count() > 0) first_token_at_ = Clock::now() + ctx.route->first_token_timeout;
    conn->stream.expires_after(budget(idle));
    const std::array<asio::const_buffer, 2> request{asio::buffer(head_), asio::buffer(body_)};
    auto [wec, wn] = co_await asio::async_write(conn->stream, request, kTuple);
    if (wec && clientLeft(ctx)) co_return Outcome::Done;
    if (wec) {
      if (reused) co_return Outcome::StaleConnection;
      co_return co_await failBeforeResponse(ctx, UpstreamError::Reset, 502,
                                            "upstream connection failed: " + wec.message(), "upstream_reset");
    }

    http::response_parser<http::buffer_body> parser;
    parser.header_limit(64 * 1024);
    parser.body_limit(boost::none);  // responses are streamed, never held
    if (ctx.request.method == "HEAD") parser.skip(true);
    conn->stream.expires_after(readBudget(idle, false));
    auto [hec, hn] = co_await http::async_read_header(conn->stream, conn->buffer, parser, kTuple);
    if (hec && clientLeft(ctx)) co_return Outcome::Done;
    if (hec) {
      const bool closed = hec == http::error::end_of_stream || hec == asio::error::eof ||
                          hec == asio::error::connection_reset;
      if (reused && closed && !parser.got_some()) co_return Outcome::StaleConnection;
      if (hec == beast::error::timeout && firstTokenLate())
        co_return co_await failBeforeResponse(ctx, UpstreamError::Timeout, 504, "no first token in time",
                                              "upstream_first_token_timeout");
      if (hec == beast::error::timeout)
        co_return co_await failBeforeResponse(ctx, UpstreamError::Timeout, 504, "upstream did not respond in time",
                                              "upstream_timeout");
      if (closed)
        co_return co_await failBeforeResponse(ctx, UpstreamError::Reset, 502,
                                              "upstream closed the connection before responding", "upstream_reset");
      co_return co_await failBeforeResponse(ctx, UpstreamError::ProtocolError, 502,
                                            "upstream sent an invalid response: " + hec.message(),
                                            "upstream_protocol_error");
    }

    const auto& res = parser.get();
    upstream_status_ = res.result_int();
    if (upstream_status_ == 429 && ctx.target_model->endpoints.size() > 1)
      coolDown(worker, ep, res[http::field::retry_after]);
    // Nothing has reached the client yet: a failure the next fallback takes
    // over is not forwarded (the connection is dropped, not drained).
    if (next_fallback_ && ((upstream_status_ == 429 && next_fallback_->on_429) ||
                           (upstream_status_ >= 500 && next_fallback_->on_5xx)))
      co_return Outcome::Fallback;
    filter::ResponseHead head;
    head.status = res.result_int();
    head.reason.assign(res.reason());
    for (const auto& f : res) {
      std::string_view name = f.name_string();
      if (proxy::isHopByHop(name) || filter::equalsIgnoreCase(name, "content-length") ||
          filter::equalsIgnoreCase(name, "x-request-id"))
        continue;
      head.headers.add(std::string(name), std::string(f.value()));
    }
    std::optional<std::uint64_t> length;
    if (auto cl = parser.content_length()) length = *cl;
    const bool sse = head.headers.get("content-type").value_or("").starts_with("text/event-stream");
    if (!co_await ctx.downstream->sendHeaders(head, parser.is_done(), length)) co_return Outcome::Done;
    bool got_first_byte = false;

    struct RelayBuffer {
      proxy::Worker& worker;
      std::unique_ptr<char[]> data = worker.takeRelayBuffer();
      ~RelayBuffer() { worker.returnRelayBuffer(std::move(data)); }
    } buf{worker};
    constexpr std::size_t kBufSize = proxy::Worker::kRelayBufferSize;
    // Each read is forwarded as soon as it arrives (an SSE event is not held
    // back for the next), and the next read waits for the client to take it.
    while (!parser.is_done()) {
      auto& body = parser.get().body();
      body.data = buf.data.get();
      body.size = kBufSize;
      conn->stream.expires_after(readBudget(idle, got_first_byte));
      auto [ec, got_bytes] = co_await http::async_read_some(conn->stream, conn->buffer, parser, kTuple);
      if (ec == http::error::need_buffer) ec = {};
      if (ec && clientLeft(ctx)) co_return Outcome::Done;  // nobody to tell
      if (ec) {
        const bool timeout = ec == beast::error::timeout;
        stats.count(timeout ? UpstreamError::Timeout : UpstreamError::Reset);
        ctx.error_source = filter::ErrorSource::Upstream;
        ctx.error_reason = !timeout               ? "upstream_reset_mid_stream"
                           : !got_first_byte && firstTokenLate() ? "upstream_first_token_timeout"
                                                                  : "upstream_timeout_mid_stream";
        if (sse)
          co_await ctx.downstream->sendBody(
              sseErrorEvent(timeout ? "the model stopped responding" : "the model connection was lost", ctx.error_reason),
              false);
        ctx.downstream->abort();
        co_return Outcome::Done;
      }
      const std::size_t got = kBufSize - parser.get().body().size;
      const bool end = parser.is_done();
      if (got == 0 && !end) continue;
      got_first_byte = got_first_byte || got > 0;
      if (!co_await ctx.downstream->sendBody(std::string_view(buf.data.get(), got), end)) co_return Outcome::Done;
    }
    if (parser.keep_alive() && conn->buffer.size() == 0) {
      conn->stream.expires_never();
      worker.upstreams().put(ep.key, std::move(conn));
    }
    co_return Outcome::Done;
  }

  std::string body_;
  std::string head_;
  std::size_t host_at_ = 0;
  const config::FallbackConfig* next_fallback_ = nullptr;
  unsigned upstream_status_ = 0;
  Clock::time_point deadline_ = Clock::time_point::max();
  Clock::time_point first_token_at_ = Clock::time_point::max();
};

class RouterFactory final : public filter::FilterFactory {
 public:
  std::unique_ptr<filter::StreamFilter> create() const override { return std::make_unique<RouterFilter>(); }
  bool terminal() const override { return true; }
};

}  // namespace

void registerRouterFilter() {
  filter::FilterRegistry::instance().add(
      "router", [](std::string_view config_json, std::string& error) -> std::shared_ptr<const filter::FilterFactory> {
        if (config_json != "{}" && !config_json.empty()) {
          error = "the router filter takes no config";
          return nullptr;
        }
        return std::make_shared<RouterFactory>();
      });
}

}  // namespace infermesh::router
