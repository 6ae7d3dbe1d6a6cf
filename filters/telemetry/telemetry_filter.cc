// telemetry: GenAI metrics for every request the chain serves
// (docs/observability.md): token usage, time to first token, time per
// output token and request duration under the OpenTelemetry GenAI
// semantic conventions' names and bucket boundaries, and infermesh_
// metrics for what they do not cover (tokens and cost per tenant and
// route, requests and tokens in flight per model for autoscalers).
//
// Every label value comes from the config (model, tenant and route names)
// or a closed set (operation, token type); a model name a client sends
// that the config does not know is "other", so clients cannot grow the
// series. It reads ctx.usage (the core extracts it, wantsUsage) and
// changes nothing; it counts the requests that reached a model.
//
// With `tracing`, it continues or starts the request's W3C trace, which
// the router propagates per attempt (proxy/tracing/stream_trace.h), and
// hands the request's span and its attempts' to the OTLP exporter.
#include <algorithm>
#include <array>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include <simdjson.h>

#include "proxy/common/json_string.h"
#include "proxy/config/snapshot.h"
#include "proxy/filter/filter.h"
#include "proxy/filter/identity.h"
#include "proxy/filter/model_signals.h"
#include "proxy/stats/filter_metrics.h"
#include "proxy/tracing/otlp_exporter.h"
#include "proxy/tracing/stream_trace.h"

namespace infermesh::telemetry {
namespace {

using filter::FilterStatus;
using filter::StreamContext;

// Bucket boundaries the GenAI semantic conventions give.
const std::vector<double> kTokenBuckets = {1,     4,      16,      64,      256,      1024,     4096,
                                           16384, 65536,  262144,  1048576, 4194304,  16777216, 67108864};
const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                          0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0};
const std::vector<double> kTpotBuckets = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5};
const std::vector<double> kDurationBuckets = {0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64,
                                              1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92};
// The proxy's own time per request: tens of microseconds to a few ms.
const std::vector<double> kOverheadBuckets = {0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
                                              0.001,   0.0025,   0.005,   0.01,   0.025,   0.1};

enum Operation : std::uint8_t { kChat, kTextCompletion, kEmbeddings, kOther, kOperations };
constexpr std::array<const char*, kOperations> kOperationNames = {"chat", "text_completion", "embeddings", "other"};

Operation operationOf(std::string_view path) {
  if (path.find("/chat/completions") != std::string_view::npos || path.find("/messages") != std::string_view::npos)
    return kChat;
  if (path.find("/completions") != std::string_view::npos) return kTextCompletion;
  if (path.find("/embeddings") != std::string_view::npos) return kEmbeddings;
  return kOther;
}

// The series of one (operation, requested model, served model, tenant,
// route, endpoint region): declared the first time a worker meets the
// combination.
struct Series {
  stats::HistogramMetric input_tokens, output_tokens, ttft, tpot, duration, queue;
  stats::CounterMetric tokens_in, tokens_out, tokens_cached, tokens_reasoning, cost, requests, retries, fallbacks;
};

// Per model, for autoscalers: what is in flight and what waits for a slot
// (the router moves that one). Every configured model has them, whatever
// the governor folds: an autoscaler needs each model's own.
bool prepare(const config::Snapshot& snap, std::string&) {
  auto signals = std::make_shared<filter::ModelSignals>();
  auto& m = stats::FilterMetrics::instance();
  for (const auto& model : snap.models) {
    const stats::MetricLabels by{{"model", model.name}};
    signals->by_model.push_back(filter::ModelSignals::PerModel{
        m.gauge("infermesh_genai_requests_in_flight", "Requests a model is serving now (sent, not yet answered in full)", by),
        m.gauge("infermesh_genai_tokens_in_flight",
                "Tokens of the requests in flight: their prompts, at about 4 bytes a token", by),
        m.gauge("infermesh_genai_requests_queued",
                "Requests waiting for an admission slot of the model (circuit breakers) or for it to wake", by)});
  }
  if (snap.filter_runtime.size() <= filter::kModelSignalsSlot) snap.filter_runtime.resize(filter::kModelSignalsSlot + 1);
  snap.filter_runtime[filter::kModelSignalsSlot] = std::move(signals);
  return true;
}

// The cardinality governor: the first `limit` distinct values of a label
// this process meets keep their name, later ones are counted as "other".
// Values are config names already (bounded by the config); this bounds a
// config of thousands of tenants or models to what a Prometheus can hold.
// First come rather than top by traffic, so a series never changes name.
class Governor {
 public:
  explicit Governor(const char* label)
      : folded_(stats::FilterMetrics::instance().sharedCounter(
            "infermesh_telemetry_folded_values_total",
            "Distinct label values the telemetry filter counted as \"other\" (past maxModels, maxTenants)",
            {{"label", label}})) {}
  std::string admit(const std::string& value, std::size_t limit) {
    std::lock_guard lock(mu_);
    if (kept_.count(value) != 0) return value;
    if (kept_.size() < limit) {
      kept_.insert(value);
      return value;
    }
    if (folded_values_.insert(value).second) folded_.inc();
    return "other";
  }

 private:
  std::mutex mu_;
  std::unordered_set<std::string> kept_, folded_values_;
  stats::SharedCounter folded_;
};

Governor& modelGovernor() {
  static Governor g("model");
  return g;
}
Governor& tenantGovernor() {
  static Governor g("tenant");
  return g;
}

struct Limits {
  std::size_t models = 500, tenants = 500;
};

const filter::Registration kPrepared{filter::SnapshotPreparer{&prepare}};

constexpr std::uint32_t kNone = 0xFFFFFFFF;  // no tenant, no route, an unknown model

const Series& series(const StreamContext& ctx, const Limits& limits, Operation op, std::uint32_t requested,
                     const config::ModelConfig& served, const config::TenantConfig* tenant) {
  const std::uint32_t tenant_index = tenant ? tenant->index : kNone;
  const std::uint32_t route_index =
      ctx.route ? static_cast<std::uint32_t>(ctx.route - ctx.snapshot->routes.data()) : kNone;
  struct Key {
    std::uint32_t op, requested, served, tenant, route;
    const char* region;  // config-owned, stable for the snapshot
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const {
      std::uint64_t h = k.op;
      for (const std::uint32_t v : {k.requested, k.served, k.tenant, k.route}) h = h * 0x9E3779B97F4A7C15ull + v;
      h = h * 0x9E3779B97F4A7C15ull + reinterpret_cast<std::uintptr_t>(k.region);
      return static_cast<std::size_t>(h ^ (h >> 29));
    }
  };
  struct Cache {
    const config::Snapshot* snapshot = nullptr;
    std::unordered_map<Key, Series, KeyHash> by_key;
  };
  thread_local Cache cache;
  if (cache.snapshot != ctx.snapshot.get()) {  // indexes are per snapshot
    cache.by_key.clear();
    cache.snapshot = ctx.snapshot.get();
  }
  const Key key{op, requested, served.index, tenant_index, route_index, ctx.upstream_region.data()};
  if (auto it = cache.by_key.find(key); it != cache.by_key.end()) return it->second;

  auto& m = stats::FilterMetrics::instance();
  auto& models = modelGovernor();
  const std::string requested_name =
      requested == kNone ? std::string("other") : models.admit(ctx.snapshot->models[requested].name, limits.models);
  const std::string served_name = models.admit(served.name, limits.models);
  const char* provider = served.body_format == config::BodyFormat::OpenAi ? "openai" : "open_inference";
  const stats::MetricLabels genai{{"gen_ai_operation_name", kOperationNames[op]},
                                  {"gen_ai_provider_name", provider},
                                  {"gen_ai_request_model", requested_name},
                                  {"gen_ai_response_model", served_name}};
  auto with = [&](stats::MetricLabels l, std::pair<std::string, std::string> extra) {
    l.push_back(std::move(extra));
    return l;
  };
  const std::string region = ctx.upstream_region.empty() ? std::string("-") : std::string(ctx.upstream_region);
  const stats::MetricLabels by{{"model", served_name},
                               {"tenant", tenant ? tenantGovernor().admit(tenant->name, limits.tenants) : std::string("-")},
                               {"route", ctx.route ? ctx.route->name : std::string("-")}};
  const auto mesh = with(by, {"region", region});
  auto typed = [&](const char* type) { return with(with(by, {"type", type}), {"region", region}); };
  const char* usage_help = "Tokens used per request (OpenTelemetry gen_ai.client.token.usage)";
  const char* tokens_help = "Tokens by model, tenant, route and type";
  Series s{
      m.histogram("gen_ai_client_token_usage", usage_help, kTokenBuckets, with(genai, {"gen_ai_token_type", "input"})),
      m.histogram("gen_ai_client_token_usage", usage_help, kTokenBuckets, with(genai, {"gen_ai_token_type", "output"})),
      m.histogram("gen_ai_server_time_to_first_token_seconds",
                  "Time from the request to the first token of a stream, through the proxy", kTtftBuckets, genai),
      m.histogram("gen_ai_server_time_per_output_token_seconds",
                  "Time per output token after the first, of a stream", kTpotBuckets, genai),
      m.histogram("gen_ai_server_request_duration_seconds", "Time from the request to the end of the answer",
                  kDurationBuckets, genai),
      m.histogram("infermesh_genai_queue_seconds",
                  "Time a request waited for an admission slot of the model (circuit breakers)", kTtftBuckets,
                  {{"model", served_name}}),
      m.counter("infermesh_genai_tokens_total", tokens_help, typed("input")),
      m.counter("infermesh_genai_tokens_total", tokens_help, typed("output")),
      m.counter("infermesh_genai_tokens_total", tokens_help, typed("cached_input")),
      m.counter("infermesh_genai_tokens_total", tokens_help, typed("reasoning")),
      m.counter("infermesh_genai_cost_total", "Cost of the tokens used, in the currency of the Model's pricing", mesh),
      m.counter("infermesh_genai_requests_total", "Requests a model served (any status)", mesh),
      m.counter("infermesh_genai_retries_total", "Attempts on another endpoint of the same model, after the first", mesh),
      m.counter("infermesh_genai_fallbacks_total", "Fallback models tried before the one that served", mesh)};
  return cache.by_key.emplace(key, s).first->second;
}

double seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

std::uint64_t unixNanos(std::chrono::system_clock::time_point t) {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
}

// Tracing settings (docs/observability.md#traces).
struct Tracing {
  std::shared_ptr<tracing::OtlpExporter> exporter;
  double sample_ratio = 1.0;     // of traces this proxy starts; a caller's sampled flag decides the rest
  bool capture_content = false;  // prompts and completions as span attributes (a route opts in)
};

// The settings: `role` names this proxy's hop (sidecar, node...) on the
// overhead histogram.
struct Config {
  stats::HistogramMetric overhead;
  Tracing tracing;
  Limits limits;
};

// Head sampling by ratio on the trace id's low 8 bytes, as OpenTelemetry's
// TraceIdRatioBased sampler does, so every hop that samples by the same
// ratio keeps the same traces.
bool sampledByRatio(const tracing::TraceId& id, double ratio) {
  if (ratio >= 1) return true;
  if (ratio <= 0) return false;
  std::uint64_t low = 0;
  for (std::size_t i = 8; i < 16; ++i) low = low << 8 | id[i];
  return static_cast<double>(low) < ratio * 18446744073709551616.0;
}

// What a request asked and what the model answered, for a route that opted
// in to content on spans: the request's messages (prompt, input), and the
// answer's messages, or for a stream the text of its deltas. Bounded.
constexpr std::size_t kContentLimit = 16 * 1024;

std::string requestContent(std::string_view body) {
  if (body.empty()) return {};
  simdjson::dom::parser parser;
  simdjson::dom::object obj;
  if (parser.parse(body.data(), body.size()).get_object().get(obj)) return {};
  for (const char* key : {"messages", "prompt", "input"}) {
    simdjson::dom::element v;
    if (!obj[key].get(v)) return simdjson::minify(v).substr(0, kContentLimit);
  }
  return {};
}

std::string responseContent(std::string_view body) {
  if (body.empty()) return {};
  simdjson::dom::parser parser;
  simdjson::dom::object obj;
  if (parser.parse(body.data(), body.size()).get_object().get(obj)) return {};
  simdjson::dom::array choices;
  if (!obj["choices"].get_array().get(choices)) {
    std::string out = "[";
    for (auto c : choices) {
      simdjson::dom::element m;
      if (c["message"].get(m)) continue;
      if (out.size() > 1) out += ',';
      out += simdjson::minify(m);
    }
    return (out + "]").substr(0, kContentLimit);
  }
  simdjson::dom::element content;  // Anthropic Messages
  if (!obj["content"].get(content)) return simdjson::minify(content).substr(0, kContentLimit);
  return {};
}

// Appends the text of one SSE event's delta (OpenAI chunks, Anthropic
// content_block_delta) to `text`.
void appendDeltaText(std::string_view event, simdjson::dom::parser& parser, std::string& text) {
  for (std::size_t at = 0; at < event.size();) {
    std::size_t eol = event.find('\n', at);
    if (eol == std::string_view::npos) eol = event.size();
    std::string_view line = event.substr(at, eol - at);
    at = eol + 1;
    if (!line.starts_with("data:")) continue;
    line.remove_prefix(5);
    if (line.empty()) continue;
    simdjson::dom::element doc;
    if (parser.parse(line.data(), line.size()).get(doc)) continue;
    std::string_view piece;
    if (!doc.at_pointer("/choices/0/delta/content").get_string().get(piece) ||
        !doc.at_pointer("/delta/text").get_string().get(piece))
      text.append(piece.substr(0, kContentLimit - std::min(kContentLimit, text.size())));
  }
}

class TelemetryFilter final : public filter::StreamFilter {
 public:
  explicit TelemetryFilter(const Config& c) : config_(c) {}
  bool wantsUsage() const override { return true; }

  bool wantsResponseEvents() const override { return config_.tracing.capture_content; }

  FilterStatus onRequestHeaders(StreamContext& ctx, bool end_stream) override {
    if (config_.tracing.exporter) startTrace(ctx);
    if (end_stream) begin(ctx);
    return FilterStatus::Continue;
  }
  FilterStatus onRequestBody(StreamContext& ctx, filter::BodyChunk& chunk, bool end_stream) override {
    if (end_stream) begin(ctx, chunk.size());
    if (trace_ && trace_->sampled() && trace_->capture_content && input_.size() < kContentLimit)
      input_.append(chunk.view().substr(0, kContentLimit - input_.size()));
    return FilterStatus::Continue;
  }
  FilterStatus onResponseBody(StreamContext& ctx, filter::BodyChunk& chunk, bool) override {
    if (!trace_ || !trace_->sampled() || !trace_->capture_content) return FilterStatus::Continue;
    if (ctx.stream) {
      filter::forEachEvent(chunk.view(), false, [&](std::string_view e) { appendDeltaText(e, parser_, output_); });
    } else if (output_.size() < 4 * kContentLimit) {
      output_.append(chunk.view().substr(0, 4 * kContentLimit - output_.size()));
    }
    return FilterStatus::Continue;
  }

  void onComplete(StreamContext& ctx) override {
    if (gauges_ != nullptr) {
      gauges_->requests_in_flight.add(-1);
      gauges_->tokens_in_flight.add(-static_cast<double>(tokens_in_flight_));
    }
    if (trace_ && trace_->sampled()) exportSpans(ctx);
    // Counted once a model was asked (a local answer before that is no
    // model's work; the HTTP metrics count it).
    if (ctx.target_model == nullptr || ctx.upstream_attempts == 0) return;
    const auto* identity = ctx.state.get(filter::kIdentity);
    const auto* requested = ctx.snapshot->findModel(ctx.model);
    const Series& s = series(ctx, config_.limits, operationOf(ctx.request.target), requested ? requested->index : kNone,
                             *ctx.target_model, identity ? identity->tenant : nullptr);
    s.requests.inc();
    if (ctx.upstream_fallbacks > 0) s.fallbacks.inc(ctx.upstream_fallbacks);
    if (ctx.upstream_attempts > 1 + ctx.upstream_fallbacks)
      s.retries.inc(ctx.upstream_attempts - 1 - ctx.upstream_fallbacks);
    const auto now = std::chrono::steady_clock::now();
    s.duration.observe(seconds(now - ctx.start));
    s.queue.observe(seconds(ctx.queue_time));
    // What this hop added: the whole exchange but the model's part and the
    // wait for its admission.
    config_.overhead.observe(std::max(0.0, seconds(now - ctx.start - ctx.upstream_time - ctx.queue_time)));
    const auto& u = ctx.usage;
    const std::int64_t in = std::max<std::int64_t>(0, u.input);
    const std::int64_t out = std::max<std::int64_t>(0, u.outputSoFar());
    if (u.input >= 0) s.input_tokens.observe(static_cast<double>(in));
    if (u.output >= 0 || u.streamed_output > 0) s.output_tokens.observe(static_cast<double>(out));
    s.tokens_in.inc(static_cast<double>(in));
    s.tokens_out.inc(static_cast<double>(out));
    s.tokens_cached.inc(static_cast<double>(u.cached_input));
    s.tokens_reasoning.inc(static_cast<double>(u.reasoning));
    s.cost.inc(ctx.target_model->cost(in, u.cached_input, out));
    if (ctx.stream && ctx.first_byte_at) {
      s.ttft.observe(seconds(*ctx.first_byte_at - ctx.start));
      if (out > 1) s.tpot.observe(seconds(now - *ctx.first_byte_at) / static_cast<double>(out - 1));
    }
  }

 private:
  // The request's trace: the caller's (`traceparent`, sampled as it says)
  // or a new one sampled by ratio. Its own span is the parent of every
  // attempt the router makes.
  void startTrace(StreamContext& ctx) {
    auto& t = ctx.state.emplace(tracing::kStreamTrace);
    trace_ = &t;
    const auto parent = tracing::parseTraceparent(ctx.request.headers.get("traceparent").value_or(""));
    if (parent) {
      t.trace_id = parent->trace_id;
      t.parent_id = parent->parent_id;
      t.flags = parent->flags;
      if (auto state = ctx.request.headers.get("tracestate"); state && tracing::validTracestate(*state))
        t.tracestate = std::string(*state);
    } else {
      t.trace_id = tracing::newTraceId();
      t.flags = sampledByRatio(t.trace_id, config_.tracing.sample_ratio) ? tracing::kSampledFlag : 0;
    }
    t.span_id = tracing::newSpanId();
    t.capture_content = config_.tracing.capture_content;
  }

  // One span for the request (SERVER) and one per attempt (CLIENT), with
  // the GenAI semantic conventions' attributes, handed to the exporter.
  void exportSpans(const StreamContext& ctx) {
    using tracing::Attribute;
    const auto steady_now = std::chrono::steady_clock::now();
    const auto now = std::chrono::system_clock::now();
    const auto start = now - std::chrono::duration_cast<std::chrono::system_clock::duration>(steady_now - ctx.start);
    const Operation op = operationOf(ctx.request.target);
    const std::string requested = ctx.model.substr(0, 256);
    std::vector<tracing::SpanData> spans;
    spans.reserve(1 + trace_->attempts.size());

    tracing::SpanData& req = spans.emplace_back();
    req.trace_id = trace_->trace_id;
    req.span_id = trace_->span_id;
    req.parent_id = trace_->parent_id;
    req.remote_parent = !tracing::isZero(trace_->parent_id);
    req.tracestate = trace_->tracestate;
    req.flags = trace_->flags;
    req.kind = tracing::SpanKind::Server;
    req.name = std::string(kOperationNames[op]) + (requested.empty() ? "" : " " + requested);
    req.start_ns = unixNanos(start);
    req.end_ns = unixNanos(now);
    auto& a = req.attributes;
    a.push_back({"gen_ai.operation.name", std::string(kOperationNames[op])});
    if (!requested.empty()) a.push_back({"gen_ai.request.model", requested});
    if (ctx.target_model) {
      a.push_back({"gen_ai.response.model", ctx.target_model->name});
      a.push_back({"gen_ai.provider.name",
                   std::string(ctx.target_model->body_format == config::BodyFormat::OpenAi ? "openai" : "open_inference")});
    }
    const auto& u = ctx.usage;
    if (u.input >= 0) a.push_back({"gen_ai.usage.input_tokens", std::int64_t{u.input}});
    if (u.outputSoFar() > 0 || u.output >= 0) a.push_back({"gen_ai.usage.output_tokens", std::int64_t{u.outputSoFar()}});
    if (u.cached_input > 0) a.push_back({"gen_ai.usage.cache_read.input_tokens", std::int64_t{u.cached_input}});
    if (u.reasoning > 0) a.push_back({"infermesh.usage.reasoning_tokens", std::int64_t{u.reasoning}});
    if (ctx.target_model && (u.input >= 0 || u.outputSoFar() > 0))
      a.push_back({"infermesh.cost", ctx.target_model->cost(std::max<std::int64_t>(0, u.input), u.cached_input,
                                                            std::max<std::int64_t>(0, u.outputSoFar()))});
    a.push_back({"http.request.method", ctx.request.method});
    a.push_back({"url.path", std::string(ctx.request.path())});
    a.push_back({"http.response.status_code", std::int64_t{ctx.response_status}});
    a.push_back({"client.address", ctx.client_address});
    a.push_back({"infermesh.request_id", ctx.request_id});
    a.push_back({"infermesh.stream", ctx.stream});
    a.push_back({"infermesh.attempts", std::int64_t{ctx.upstream_attempts}});
    if (ctx.route) a.push_back({"infermesh.route", ctx.route->name});
    if (const auto* id = ctx.state.get(filter::kIdentity); id && id->tenant)
      a.push_back({"infermesh.tenant", id->tenant->name});
    if (ctx.stream && ctx.first_byte_at)
      a.push_back({"infermesh.time_to_first_token_seconds", seconds(*ctx.first_byte_at - ctx.start)});
    if (trace_->capture_content) {
      if (auto in = requestContent(input_); !in.empty()) a.push_back({"gen_ai.input.messages", std::move(in)});
      std::string out = ctx.stream ? (output_.empty() ? std::string()
                                                      : "[{\"role\":\"assistant\",\"content\":" + jsonString(output_) + "}]")
                                   : responseContent(output_);
      if (!out.empty()) a.push_back({"gen_ai.output.messages", std::move(out)});
    }
    if (ctx.response_status >= 500 || ctx.error_source == filter::ErrorSource::Upstream ||
        ctx.error_source == filter::ErrorSource::Internal) {
      req.error = true;
      req.status_message = ctx.error_reason;
      a.push_back({"error.type", ctx.error_reason.empty() ? std::to_string(ctx.response_status) : ctx.error_reason});
    }

    for (const auto& at : trace_->attempts) {
      tracing::SpanData& s = spans.emplace_back();
      s.trace_id = trace_->trace_id;
      s.span_id = at.span_id;
      s.parent_id = trace_->span_id;
      s.tracestate = trace_->tracestate;
      s.flags = trace_->flags;
      s.kind = tracing::SpanKind::Client;
      s.name = std::string(kOperationNames[op]) + " " + at.model;
      s.start_ns = unixNanos(at.start);
      // An attempt still open when the request ended (the client left).
      s.end_ns = unixNanos(at.end == std::chrono::system_clock::time_point{} ? now : at.end);
      auto& sa = s.attributes;
      sa.push_back({"gen_ai.operation.name", std::string(kOperationNames[op])});
      sa.push_back({"gen_ai.request.model", at.model});
      const auto colon = at.address.rfind(':');
      sa.push_back({"server.address", at.address.substr(0, colon)});
      if (colon != std::string::npos) sa.push_back({"server.port", std::int64_t{std::atoll(at.address.c_str() + colon + 1)}});
      if (at.status != 0) sa.push_back({"http.response.status_code", std::int64_t{at.status}});
      sa.push_back({"infermesh.attempt", std::int64_t{at.number}});
      sa.push_back({"infermesh.retry", at.number > 1 && !at.fallback});
      sa.push_back({"infermesh.fallback", at.fallback});
      if (!at.region.empty()) sa.push_back({"infermesh.endpoint.region", at.region});
      if (!at.error.empty() || at.status >= 500) {
        s.error = true;
        s.status_message = at.error;
        sa.push_back({"error.type", at.error.empty() ? std::to_string(at.status) : at.error});
      }
    }
    config_.tracing.exporter->enqueue(std::move(spans));
  }

  static std::string jsonString(std::string_view v) {
    std::string out;
    common::appendJsonString(out, v);
    return out;
  }

  void begin(StreamContext& ctx, std::size_t body_bytes = 0) {
    if (ctx.target_model == nullptr || gauges_ != nullptr) return;
    const auto* signals = static_cast<const filter::ModelSignals*>(ctx.snapshot->runtime(filter::kModelSignalsSlot));
    if (signals == nullptr || ctx.target_model->index >= signals->by_model.size()) return;
    gauges_ = &signals->by_model[ctx.target_model->index];
    // The prompt at ~4 bytes a token; the output it may still produce is
    // not known here (the token limits reserve it).
    tokens_in_flight_ = static_cast<std::int64_t>(body_bytes / 4);
    gauges_->requests_in_flight.add(1);
    gauges_->tokens_in_flight.add(static_cast<double>(tokens_in_flight_));
  }

  const Config& config_;
  const filter::ModelSignals::PerModel* gauges_ = nullptr;
  std::int64_t tokens_in_flight_ = 0;
  tracing::StreamTrace* trace_ = nullptr;
  std::string input_, output_;  // content, when the route opted in
  simdjson::dom::parser parser_;  // for a stream's events, kept across them
};

class Factory final : public filter::FilterFactory {
 public:
  explicit Factory(Config c) : config_(c) {}
  std::unique_ptr<filter::StreamFilter> create() const override { return std::make_unique<TelemetryFilter>(config_); }

 private:
  Config config_;
};

// "250ms", "2s": a duration with its unit (a bare number is refused).
bool parseMillis(std::string_view v, std::chrono::milliseconds& out) {
  std::uint64_t n = 0;
  std::size_t i = 0;
  for (; i < v.size() && v[i] >= '0' && v[i] <= '9'; ++i) n = n * 10 + static_cast<std::uint64_t>(v[i] - '0');
  if (i == 0 || i > 9) return false;
  const std::string_view unit = v.substr(i);
  if (unit == "ms") out = std::chrono::milliseconds(n);
  else if (unit == "s") out = std::chrono::milliseconds(n * 1000);
  else return false;
  return out.count() > 0;
}

// The `tracing` mapping: where to send spans and which to keep.
bool parseTracing(simdjson::dom::object obj, Tracing& t, std::string& error) {
  tracing::ExporterOptions o;
  std::string_view collector;
  for (auto f : obj) {
    const std::string_view key = f.key;
    std::string_view str;
    double num = 0;
    std::uint64_t count = 0;
    bool flag = false;
    if (key == "collector" && !f.value.get_string().get(str)) {
      collector = str;
    } else if (key == "path" && !f.value.get_string().get(str) && str.starts_with("/")) {
      o.path = std::string(str);
    } else if (key == "serviceName" && !f.value.get_string().get(str) && !str.empty()) {
      o.service_name = std::string(str);
    } else if (key == "sampleRatio" && !f.value.get_double().get(num) && num >= 0 && num <= 1) {
      t.sample_ratio = num;
    } else if (key == "captureContent" && !f.value.get_bool().get(flag)) {
      t.capture_content = flag;
    } else if (key == "maxQueue" && !f.value.get_uint64().get(count) && count > 0 && count <= 1000000) {
      o.max_queue = count;
    } else if (key == "batchSize" && !f.value.get_uint64().get(count) && count > 0 && count <= 100000) {
      o.max_batch = count;
    } else if ((key == "flushInterval" || key == "timeout") && !f.value.get_string().get(str)) {
      if (!parseMillis(str, key == "timeout" ? o.timeout : o.flush_interval)) {
        error = "telemetry: tracing." + std::string(key) + " must be a duration with its unit (\"500ms\", \"2s\")";
        return false;
      }
    } else {
      static const char* kKnown =
          "collector, path, serviceName, sampleRatio (0..1), captureContent, maxQueue, batchSize, flushInterval, timeout";
      error = "telemetry: bad or unknown tracing setting \"" + std::string(key) + "\" (" + kKnown + ")";
      return false;
    }
  }
  // host:port, or [v6]:port
  const auto colon = collector.rfind(':');
  if (collector.empty() || colon == std::string_view::npos || colon + 1 == collector.size() || colon == 0) {
    error = "telemetry: tracing.collector must be host:port of an OTLP/HTTP receiver (e.g. 127.0.0.1:4318)";
    return false;
  }
  o.host = std::string(collector.substr(0, colon));
  if (o.host.size() > 2 && o.host.front() == '[' && o.host.back() == ']') o.host = o.host.substr(1, o.host.size() - 2);
  o.port = std::string(collector.substr(colon + 1));
  t.exporter = tracing::OtlpExporter::forCollector(o);
  return true;
}

std::shared_ptr<const filter::FilterFactory> build(std::string_view json, std::string& error) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  simdjson::dom::object obj;
  if (json.empty()) json = "{}";
  if (parser.parse(json.data(), json.size()).get(doc) || doc.get_object().get(obj)) {
    error = "telemetry config must be a mapping";
    return nullptr;
  }
  std::string role = "proxy";
  Tracing traces;
  Limits limits;
  for (auto f : obj) {
    std::string_view v;
    simdjson::dom::object sub;
    std::uint64_t n = 0;
    if (f.key == "maxModels" || f.key == "maxTenants") {
      if (f.value.get_uint64().get(n) || n == 0 || n > 100000) {
        error = "telemetry: " + std::string(f.key) + " must be a count from 1 to 100000";
        return nullptr;
      }
      (f.key == "maxModels" ? limits.models : limits.tenants) = static_cast<std::size_t>(n);
    } else if (f.key == "role") {
      if (f.value.get_string().get(v) || v.empty() || v.size() > 64) {
        error = "telemetry: role must be a short name (sidecar, node...)";
        return nullptr;
      }
      role = std::string(v);
    } else if (f.key == "tracing") {
      if (f.value.get_object().get(sub)) {
        error = "telemetry: tracing must be a mapping (collector, sampleRatio...)";
        return nullptr;
      }
      if (!parseTracing(sub, traces, error)) return nullptr;
    } else {
      error = "telemetry: unknown setting \"" + std::string(f.key) + "\" (role, tracing, maxModels, maxTenants)";
      return nullptr;
    }
  }
  return std::make_shared<Factory>(Config{stats::FilterMetrics::instance().histogram(
                                              "infermesh_proxy_overhead_seconds",
                                              "Time a request spent in this proxy, not waiting on a model server or "
                                              "its admission slot",
                                              kOverheadBuckets, {{"role", role}}),
                                          std::move(traces), limits});
}

const filter::Registration kRegistered{"telemetry", &build};

}  // namespace
}  // namespace infermesh::telemetry
