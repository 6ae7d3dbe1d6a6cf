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
#include <algorithm>
#include <array>
#include <unordered_map>

#include <simdjson.h>

#include "proxy/config/snapshot.h"
#include "proxy/filter/filter.h"
#include "proxy/filter/identity.h"
#include "proxy/stats/filter_metrics.h"

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
// route): declared the first time a worker meets the combination.
struct Series {
  stats::HistogramMetric input_tokens, output_tokens, ttft, tpot, duration, queue;
  stats::CounterMetric tokens_in, tokens_out, tokens_cached, tokens_reasoning, cost, requests;
};

// Per model, for autoscalers: what is in flight now.
struct ModelGauges {
  stats::GaugeMetric requests, tokens;
};

struct Runtime {
  std::vector<ModelGauges> models;  // by model index
};

const std::uint32_t kRuntimeSlot = filter::nextRuntimeSlot();

bool prepare(const config::Snapshot& snap, std::string&) {
  auto rt = std::make_shared<Runtime>();
  auto& m = stats::FilterMetrics::instance();
  for (const auto& model : snap.models) {
    const stats::MetricLabels by{{"model", model.name}};
    rt->models.push_back(ModelGauges{
        m.gauge("infermesh_genai_requests_in_flight", "Requests a model is serving now (sent, not yet answered in full)", by),
        m.gauge("infermesh_genai_tokens_in_flight",
                "Tokens of the requests in flight: their input plus the output they may still produce", by)});
  }
  if (snap.filter_runtime.size() <= kRuntimeSlot) snap.filter_runtime.resize(kRuntimeSlot + 1);
  snap.filter_runtime[kRuntimeSlot] = std::move(rt);
  return true;
}

const filter::Registration kPrepared{filter::SnapshotPreparer{&prepare}};

constexpr std::uint32_t kNone = 0xFFFFFFFF;  // no tenant, no route, an unknown model

const Series& series(const StreamContext& ctx, Operation op, std::uint32_t requested, const config::ModelConfig& served,
                     const config::TenantConfig* tenant) {
  const std::uint32_t tenant_index = tenant ? tenant->index : kNone;
  const std::uint32_t route_index =
      ctx.route ? static_cast<std::uint32_t>(ctx.route - ctx.snapshot->routes.data()) : kNone;
  struct Key {
    std::uint32_t op, requested, served, tenant, route;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const {
      std::uint64_t h = k.op;
      for (const std::uint32_t v : {k.requested, k.served, k.tenant, k.route}) h = h * 0x9E3779B97F4A7C15ull + v;
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
  const Key key{op, requested, served.index, tenant_index, route_index};
  if (auto it = cache.by_key.find(key); it != cache.by_key.end()) return it->second;

  auto& m = stats::FilterMetrics::instance();
  const std::string requested_name =
      requested == kNone ? std::string("other") : ctx.snapshot->models[requested].name;
  const char* provider = served.body_format == config::BodyFormat::OpenAi ? "openai" : "open_inference";
  const stats::MetricLabels genai{{"gen_ai_operation_name", kOperationNames[op]},
                                  {"gen_ai_provider_name", provider},
                                  {"gen_ai_request_model", requested_name},
                                  {"gen_ai_response_model", served.name}};
  auto with = [&](stats::MetricLabels l, std::pair<std::string, std::string> extra) {
    l.push_back(std::move(extra));
    return l;
  };
  const stats::MetricLabels mesh{{"model", served.name},
                                 {"tenant", tenant ? tenant->name : std::string("-")},
                                 {"route", ctx.route ? ctx.route->name : std::string("-")}};
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
                  {{"model", served.name}}),
      m.counter("infermesh_genai_tokens_total", tokens_help, with(mesh, {"type", "input"})),
      m.counter("infermesh_genai_tokens_total", tokens_help, with(mesh, {"type", "output"})),
      m.counter("infermesh_genai_tokens_total", tokens_help, with(mesh, {"type", "cached_input"})),
      m.counter("infermesh_genai_tokens_total", tokens_help, with(mesh, {"type", "reasoning"})),
      m.counter("infermesh_genai_cost_total", "Cost of the tokens used, in the currency of the Model's pricing", mesh),
      m.counter("infermesh_genai_requests_total", "Requests a model served (any status)", mesh)};
  return cache.by_key.emplace(key, s).first->second;
}

double seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The settings: `role` names this proxy's hop (sidecar, node...) on the
// overhead histogram.
struct Config {
  stats::HistogramMetric overhead;
};

class TelemetryFilter final : public filter::StreamFilter {
 public:
  explicit TelemetryFilter(const Config& c) : config_(c) {}
  bool wantsUsage() const override { return true; }

  FilterStatus onRequestHeaders(StreamContext& ctx, bool end_stream) override {
    if (end_stream) begin(ctx);
    return FilterStatus::Continue;
  }
  FilterStatus onRequestBody(StreamContext& ctx, filter::BodyChunk& chunk, bool end_stream) override {
    if (end_stream) begin(ctx, chunk.size());
    return FilterStatus::Continue;
  }

  void onComplete(StreamContext& ctx) override {
    if (gauges_ != nullptr) {
      gauges_->requests.add(-1);
      gauges_->tokens.add(-static_cast<double>(tokens_in_flight_));
    }
    // Counted once a model was asked (a local answer before that is no
    // model's work; the HTTP metrics count it).
    if (ctx.target_model == nullptr || ctx.upstream_attempts == 0) return;
    const auto* identity = ctx.state.get(filter::kIdentity);
    const auto* requested = ctx.snapshot->findModel(ctx.model);
    const Series& s = series(ctx, operationOf(ctx.request.target), requested ? requested->index : kNone,
                             *ctx.target_model, identity ? identity->tenant : nullptr);
    s.requests.inc();
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
  void begin(StreamContext& ctx, std::size_t body_bytes = 0) {
    if (ctx.target_model == nullptr || gauges_ != nullptr) return;
    const auto* rt = static_cast<const Runtime*>(ctx.snapshot->runtime(kRuntimeSlot));
    if (rt == nullptr || ctx.target_model->index >= rt->models.size()) return;
    gauges_ = &rt->models[ctx.target_model->index];
    // The prompt at ~4 bytes a token; the output it may still produce is
    // not known here (the token limits reserve it).
    tokens_in_flight_ = static_cast<std::int64_t>(body_bytes / 4);
    gauges_->requests.add(1);
    gauges_->tokens.add(static_cast<double>(tokens_in_flight_));
  }

  const Config& config_;
  const ModelGauges* gauges_ = nullptr;
  std::int64_t tokens_in_flight_ = 0;
};

class Factory final : public filter::FilterFactory {
 public:
  explicit Factory(Config c) : config_(c) {}
  std::unique_ptr<filter::StreamFilter> create() const override { return std::make_unique<TelemetryFilter>(config_); }

 private:
  Config config_;
};

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
  for (auto f : obj) {
    std::string_view v;
    if (f.key != "role") {
      error = "telemetry: unknown setting \"" + std::string(f.key) + "\" (role)";
      return nullptr;
    }
    if (f.value.get_string().get(v) || v.empty() || v.size() > 64) {
      error = "telemetry: role must be a short name (sidecar, node...)";
      return nullptr;
    }
    role = std::string(v);
  }
  return std::make_shared<Factory>(Config{stats::FilterMetrics::instance().histogram(
      "infermesh_proxy_overhead_seconds",
      "Time a request spent in this proxy, not waiting on a model server or its admission slot", kOverheadBuckets,
      {{"role", role}})});
}

const filter::Registration kRegistered{"telemetry", &build};

}  // namespace
}  // namespace infermesh::telemetry
