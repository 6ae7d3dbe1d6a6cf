// ratelimit: request and token limits and cost budgets
// (docs/rate-limits.md). At admission it reserves the request's input
// tokens plus its expected output in every counter that applies (the
// Tenant's, the Route's and the Model's limits); while a stream runs it
// extends the reservation from the deltas the core meters, and finishes the
// stream cleanly when a counter runs dry; on completion it settles to the
// usage the model reported. Global limits spend blocks leased from Redis.
// It sits after authn and authz (it needs the tenant, and refused requests
// must not spend) and before the router.
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <unordered_map>

#include "filters/ratelimit/budget_ledger.h"
#include "filters/ratelimit/counters.h"
#include "filters/ratelimit/request_tokens.h"
#include "proxy/common/json_string.h"
#include "proxy/config/snapshot.h"
#include "proxy/filter/filter.h"
#include "proxy/filter/identity.h"
#include "proxy/ratelimit/redis_store.h"
#include "proxy/stats/filter_metrics.h"
#include "proxy/tokenizer/bpe_tokenizer.h"

namespace infermesh::ratelimit {
namespace {

using filter::FilterStatus;
using filter::StreamContext;
using Micros = GcraBucket::Micros;

const std::uint32_t kRuntimeSlot = filter::nextRuntimeSlot();

struct LimitStats {
  stats::CounterMetric admitted, refused, refused_store_down, admitted_store_down, finished, overshoot_allowed;
  stats::CounterMetric reserved_tokens, settled_tokens, overshoot_tokens;
};

// What is left of one budget window, as a gauge. Workers add to their own
// gauge values, so each publishes the change from the last value any of
// them published; the sum over workers is the latest remaining amount.
struct RemainingGauge {
  stats::GaugeMetric gauge;
  std::atomic<double>* published = nullptr;  // outlives snapshots (the series does)
  int window = 0;
  void publish(double remaining) const { gauge.add(remaining - published->exchange(remaining)); }
};

struct TenantStats {
  stats::CounterMetric spent, refused, downgraded;
  std::vector<RemainingGauge> remaining;  // tenant-wide budgets only
};

std::atomic<double>* publishedRemaining(const std::string& key) {
  static std::mutex mu;
  static auto* values = new std::unordered_map<std::string, std::unique_ptr<std::atomic<double>>>();
  std::lock_guard lock(mu);
  auto& v = (*values)[key];
  if (!v) v = std::make_unique<std::atomic<double>>(0.0);
  return v.get();
}

// Per snapshot: metrics by limit and tenant (their names are config), and
// the tokenizer of each model that names one.
struct Runtime {
  std::vector<LimitStats> limits;
  std::vector<TenantStats> tenants;  // by budget index
  std::vector<std::shared_ptr<const tokenizer::BpeTokenizer>> tokenizers;  // by model index
};

bool prepare(const config::Snapshot& snap, std::string& error) {
  if (!snap.rate_limits) return true;
  auto rt = std::make_shared<Runtime>();
  auto& m = stats::FilterMetrics::instance();
  for (const auto& l : snap.rate_limits->limits) {
    const stats::MetricLabels by{{"limit", l.name}};
    LimitStats s;
    s.admitted = m.counter("infermesh_ratelimit_admitted_total", "Requests a limit admitted", by);
    s.refused = m.counter("infermesh_ratelimit_refused_total", "Requests a limit refused (429)", by);
    s.refused_store_down = m.counter("infermesh_ratelimit_store_unavailable_refused_total",
                                     "Requests refused (503) because Redis was unreachable (failMode closed)", by);
    s.admitted_store_down = m.counter("infermesh_ratelimit_store_unavailable_admitted_total",
                                      "Requests admitted unmetered because Redis was unreachable (failMode open)", by);
    s.finished = m.counter("infermesh_ratelimit_finished_total", "Streams a limit ended (finish_reason length)", by);
    s.overshoot_allowed = m.counter("infermesh_ratelimit_overshoot_streams_total",
                                    "Streams let past an empty counter (onExhausted allow)", by);
    s.reserved_tokens = m.counter("infermesh_ratelimit_reserved_tokens_total", "Tokens reserved at admission and while streaming", by);
    s.settled_tokens = m.counter("infermesh_ratelimit_settled_tokens_total", "Tokens charged at settlement (actual usage)", by);
    s.overshoot_tokens = m.counter("infermesh_ratelimit_overshoot_tokens_total",
                                   "Tokens charged beyond what the counter had left", by);
    rt->limits.push_back(s);
  }
  for (const auto& b : snap.rate_limits->budgets) {
    const stats::MetricLabels by{{"tenant", b.tenant}};
    TenantStats t{
        m.counter("infermesh_budget_spent_total", "Spending charged to a tenant's budget, in the pricing's currency", by),
        m.counter("infermesh_budget_refused_total", "Requests refused over budget (429 budget_exceeded)", by),
        m.counter("infermesh_budget_downgraded_total", "Requests moved to a cheaper model to stay within budget", by),
        {}};
    const config::Micros limits[3] = {b.per_hour, b.per_day, b.per_month};
    for (int w = 0; w < 3 && !b.per_api_key; ++w) {
      if (limits[w] == 0) continue;
      const char* window = BudgetLedger::kWindowNames[w];
      t.remaining.push_back(RemainingGauge{
          m.gauge("infermesh_budget_remaining", "What is left of a tenant's budget in the current window (currency)",
                  {{"tenant", b.tenant}, {"window", window}}),
          publishedRemaining(b.tenant + "|" + window), w});
    }
    rt->tenants.push_back(std::move(t));
  }
  const auto& toks = snap.rate_limits->tokenizer_by_model;
  rt->tokenizers.resize(toks.size());
  for (std::size_t i = 0; i < toks.size(); ++i) {
    if (toks[i].file.empty()) continue;
    const auto pattern = tokenizer::patternFor(toks[i].encoding);
    if (!pattern) continue;  // the compiler refused it already
    rt->tokenizers[i] = tokenizer::loadCached(toks[i].file, *pattern, error);
    if (!rt->tokenizers[i]) {
      error = "Model/" + snap.models[i].name + " tokenizer: " + error;
      return false;
    }
  }
  if (snap.filter_runtime.size() <= kRuntimeSlot) snap.filter_runtime.resize(kRuntimeSlot + 1);
  snap.filter_runtime[kRuntimeSlot] = std::move(rt);
  return true;
}

const filter::Registration kPrepared{filter::SnapshotPreparer{&prepare}};

// One Redis connection per address for the whole proxy, kept across reloads.
std::shared_ptr<RedisStore> storeFor(const RedisOptions& o) {
  static std::mutex mu;
  static auto* stores = new std::unordered_map<std::string, std::shared_ptr<RedisStore>>();
  const std::string key = o.host + ":" + std::to_string(o.port) + "/" + std::to_string(o.db) + "/" + o.key_prefix;
  std::lock_guard lock(mu);
  auto& s = (*stores)[key];
  if (!s) s = std::make_shared<RedisStore>(o);
  return s;
}

// The filter's settings. Building it only parses them: the compiler runs
// in the control plane and infermeshctl too, which must not connect to
// Redis or take the state file. The proxy activates it when its first
// stream is created (once, cheap to check afterwards).
struct Config {
  std::int64_t extend_step = 32;  // tokens a stream's reservation grows by
  bool use_redis = false;
  RedisOptions redis;
  std::string password_file;
  std::string state_file;

  void activate() const {
    std::call_once(once_, [this] {
      if (!state_file.empty())
        if (std::string e; !BudgetLedger::instance().useStateFile(state_file, e))
          spdlog::error("ratelimit: {}; budgets are kept in memory only", e);
      if (!use_redis) return;
      RedisOptions o = redis;
      if (!password_file.empty()) {
        std::FILE* file = std::fopen(password_file.c_str(), "r");
        if (file == nullptr) {
          spdlog::error("ratelimit: cannot read redisPasswordFile {}; connecting without a password", password_file);
        } else {
          char buf[512];
          const std::size_t got = std::fread(buf, 1, sizeof buf, file);
          std::fclose(file);
          o.password.assign(buf, got);
          while (!o.password.empty() && (o.password.back() == '\n' || o.password.back() == '\r')) o.password.pop_back();
        }
      }
      store_ = storeFor(o);
    });
  }
  // Null: no Redis configured (global limits count in this proxy).
  const std::shared_ptr<RedisStore>& store() const { return store_; }

 private:
  mutable std::once_flag once_;
  mutable std::shared_ptr<RedisStore> store_;
};

// "6m0s", "1s", "20ms": how OpenAI writes x-ratelimit-reset-*.
std::string resetText(Micros us) {
  const auto ms = static_cast<std::int64_t>(std::ceil(us / 1000.0));
  if (ms < 1000) return std::to_string(ms) + "ms";
  const std::int64_t s = (ms + 999) / 1000;
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  return std::to_string(s / 3600) + "h" + std::to_string((s % 3600) / 60) + "m" + std::to_string(s % 60) + "s";
}

// Where one window of an applicable limit counts.
struct Slot {
  const config::RateLimitConfig* limit = nullptr;
  const config::LimitWindow* window = nullptr;
  GcraBucket* bucket = nullptr;  // local
  Lease* lease = nullptr;        // global
  std::int64_t taken = 0;        // units held for this request (tokens: the reservation)
  bool unmetered = false;        // global, Redis down, failMode open
};

class RateLimitFilter final : public filter::StreamFilter {
 public:
  explicit RateLimitFilter(std::shared_ptr<const Config> c) : config_(std::move(c)) {}

  bool wantsUsage() const override { return true; }

  FilterStatus onRequestHeaders(StreamContext& ctx, bool end_stream) override {
    if (!end_stream) return FilterStatus::Continue;
    std::string none;
    return admit(ctx, none);
  }

  FilterStatus onRequestBody(StreamContext& ctx, filter::BodyChunk& chunk, bool end_stream) override {
    if (!end_stream) return FilterStatus::StopAndBuffer;  // the whole body decides the reservation
    std::string& body = chunk.edit();
    return admit(ctx, body);
  }

  FilterStatus onResponseHeaders(StreamContext& ctx, filter::ResponseHead& head, bool) override {
    if (!active_) return FilterStatus::Continue;
    addHeaders(head.headers);
    sse_ = head.headers.get("content-type").value_or("").starts_with("text/event-stream");
    (void)ctx;
    return FilterStatus::Continue;
  }

  FilterStatus onResponseBody(StreamContext& ctx, filter::BodyChunk& chunk, bool end_stream) override {
    if (!active_ || !sse_ || finished_) return FilterStatus::Continue;
    if (strip_usage_ && chunk.view().find("\"usage\"") != std::string_view::npos) stripUsageChunk(chunk);
    if (id_.empty()) rememberStreamIds(chunk.view());
    if (anthropic_) trackContentBlock(chunk.view());
    if (ctx.usage.reported() || end_stream) return FilterStatus::Continue;  // settled at completion
    const std::int64_t out = ctx.usage.streamed_output;
    if (out <= reserved_output_) return FilterStatus::Continue;
    const std::int64_t need = out - reserved_output_;
    if (extend(need)) return FilterStatus::Continue;
    // A counter ran dry mid-stream.
    if (exhausted_->limit->finish) {
      finishStream(ctx, chunk);
      return FilterStatus::Continue;
    }
    if (!overshot_) stats(*exhausted_->limit).overshoot_allowed.inc();  // once per stream
    overshot_ = true;
    forceCharge(need);
    exhausted_ = nullptr;
    return FilterStatus::Continue;
  }

  void onComplete(StreamContext& ctx) override {
    if (!active_ || settled_) return;
    settled_ = true;
    settle(ctx);
  }

 private:
  const Runtime* runtime(const StreamContext& ctx) const {
    return static_cast<const Runtime*>(ctx.snapshot->runtime(kRuntimeSlot));
  }
  const LimitStats& stats(const config::RateLimitConfig& l) const { return rt_->limits[l.index]; }

  // The key values of `limit` for this request, joined.
  void keyValues(const config::RateLimitConfig& limit, const StreamContext& ctx, std::string& out) const {
    out.clear();
    auto part = [&](std::string_view v) {
      out.append(v.empty() ? std::string_view("-") : v);
      out += '\x1f';
    };
    if (limit.per & config::kByTenant) part(identity_ && identity_->tenant ? std::string_view(tenantName()) : "");
    if (limit.per & config::kByApiKey) part(identity_ ? std::string_view(identity_->principal) : "");
    if (limit.per & config::kByModel) part(ctx.target_model->name);
    if (limit.per & config::kByRoute) part(ctx.route ? std::string_view(ctx.route->name) : "");
  }
  const std::string& tenantName() const;

  void collectSlots(const StreamContext& ctx) {
    const auto& rl = *ctx.snapshot->rate_limits;
    thread_local std::string values;  // reused: no allocation per request
    auto add = [&](std::uint32_t li) {
      const auto& limit = rl.limits[li];
      keyValues(limit, ctx, values);
      Counter& c = CounterTable::instance().find(limit, values, config_->store());
      for (std::size_t w = 0; w < limit.windows.size(); ++w)
        slots_.push_back(Slot{&limit, &limit.windows[w], c.buckets[w].get(), c.leases[w].get(), 0, false});
    };
    if (identity_ && identity_->tenant && identity_->tenant->index < rl.by_tenant.size())
      for (auto li : rl.by_tenant[identity_->tenant->index]) add(li);
    if (ctx.route != nullptr) {
      const auto ri = static_cast<std::size_t>(ctx.route - ctx.snapshot->routes.data());
      if (ri < rl.by_route.size())
        for (auto li : rl.by_route[ri]) add(li);
    }
    if (ctx.target_model->index < rl.by_model.size())
      for (auto li : rl.by_model[ctx.target_model->index]) add(li);
  }

  FilterStatus admit(StreamContext& ctx, std::string& body) {
    if (!ctx.snapshot->rate_limits || ctx.target_model == nullptr || ctx.local_reply) return FilterStatus::Continue;
    rt_ = runtime(ctx);
    if (rt_ == nullptr) return FilterStatus::Continue;
    identity_ = ctx.state.get(filter::kIdentity);
    const auto& rl = *ctx.snapshot->rate_limits;
    model_ = ctx.target_model;
    const tokenizer::BpeTokenizer* tok =
        model_->index < rt_->tokenizers.size() ? rt_->tokenizers[model_->index].get() : nullptr;
    const RequestTokens req = readRequestTokens(body, tok);
    input_ = req.input;
    collectSlots(ctx);
    budget_ = identity_ && identity_->tenant && identity_->tenant->index < rl.budget_by_tenant.size() &&
                      rl.budget_by_tenant[identity_->tenant->index] >= 0
                  ? &rl.budgets[static_cast<std::size_t>(rl.budget_by_tenant[identity_->tenant->index])]
                  : nullptr;
    if (slots_.empty() && budget_ == nullptr) return FilterStatus::Continue;
    active_ = true;
    // The expected output: max_tokens when given, else what such requests
    // produced (95th percentile), never below the limits' floor.
    std::int64_t floor = 0;
    for (const auto& s : slots_) floor = std::max(floor, s.limit->output_floor);
    if (slots_.empty()) floor = 256;
    expected_output_ = req.max_output >= 0
                           ? req.max_output
                           : std::max(floor, ObservedOutput::instance().p95(tenantName(), model_->name));
    if (budget_ != nullptr && !checkBudget(ctx)) return FilterStatus::Continue;
    if (req.stream && req.valid && !req.has_stream_options && !body.empty() && requestStreamUsage(body))
      strip_usage_ = true;
    return reserve(ctx);
  }

  FilterStatus reserve(StreamContext& ctx) {
    const std::int64_t tokens = input_ + expected_output_;
    const Micros now = GcraBucket::now();
    Micros retry = 0;
    const Slot* refused = nullptr;
    std::vector<Slot*> need_fetch;  // leases that ran out (global windows)
    for (auto& s : slots_) {
      const std::int64_t n = s.window->tokens ? tokens : 1;
      if (s.bucket != nullptr) {
        const auto t = s.bucket->take(n, now);
        if (t.granted == n) {
          s.taken = n;
          continue;
        }
        refused = &s;
        retry = t.retry_after;
        break;
      }
      const auto r = s.lease->take(n);
      if (r == Lease::Result::Granted) {
        s.taken = n;
        continue;
      }
      if (r == Lease::Result::NeedFetch) {
        need_fetch.push_back(&s);
        continue;
      }
      if (r == Lease::Result::StoreDown && s.limit->fail_open) {
        s.unmetered = true;
        stats(*s.limit).admitted_store_down.inc();
        continue;
      }
      refused = &s;
      if (r == Lease::Result::Dry) retry = std::max<Micros>(s.lease->retryAfter(), 1e6);
      break;
    }
    if (refused == nullptr && !need_fetch.empty()) {
      giveBackAll(now);
      auto post = callbacks_ ? callbacks_->dispatcher() : nullptr;
      if (!fetched_once_ && post) {
        // Leases ran out: wait for their next blocks (each bounded by the
        // store's command timeout), then decide again, once.
        fetched_once_ = true;
        auto left = std::make_shared<std::atomic<std::size_t>>(need_fetch.size());
        for (Slot* s : need_fetch)
          s->lease->whenFetched(tokens, [left, post, this, &ctx] {
            if (left->fetch_sub(1) != 1) return;
            post([this, &ctx] {
              reserve(ctx);  // decides without waiting again: admitted, or a local reply
              callbacks_->resume();
            });
          });
        return FilterStatus::Stop;
      }
      if (!post)
        for (Slot* s : need_fetch) s->lease->whenFetched(tokens, [] {});  // later requests find the blocks
      refused = need_fetch.front();
      retry = std::max<Micros>(refused->lease->retryAfter(), 1e6);
    }
    if (refused != nullptr) {
      giveBackAll(now);
      refuse(ctx, *refused, retry);
      active_ = false;
      return FilterStatus::Continue;
    }
    reserved_output_ = expected_output_;
    for (const auto& s : slots_) {
      stats(*s.limit).admitted.inc();
      if (s.window->tokens) stats(*s.limit).reserved_tokens.inc(static_cast<double>(s.taken));
    }
    return FilterStatus::Continue;
  }

  void giveBackAll(Micros now) {
    for (auto& s : slots_) {
      if (s.taken > 0) {
        if (s.bucket) s.bucket->give(s.taken, now);
        else s.lease->give(s.taken);
      }
      s.taken = 0;
      s.unmetered = false;
    }
  }

  void refuse(StreamContext& ctx, const Slot& s, Micros retry) {
    const bool store_down = s.lease != nullptr && s.lease->storeDown();
    filter::LocalReply r;
    if (store_down) {
      stats(*s.limit).refused_store_down.inc();
      r = storeUnavailable(s.limit->name);
    } else {
      stats(*s.limit).refused.inc();
      r.status = 429;
      r.message = "Rate limit reached for " + s.limit->name + ": " + std::to_string(s.window->capacity) + " " +
                  s.window->unit() + " per " + resetText(static_cast<Micros>(s.window->window.count()) * 1000) +
                  ". Please try again in " + resetText(std::max<Micros>(retry, 1000)) + ".";
      r.type = s.window->unit();
      r.code = "rate_limit_exceeded";
      r.extra_headers.emplace_back(
          "retry-after", std::to_string(std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(retry / 1e6)))));
    }
    filter::HeaderList h;
    addHeaders(h);
    for (const auto& [n, v] : h.fields()) r.extra_headers.emplace_back(n, v);
    ctx.sendLocalReply(std::move(r));
  }

  // 503 for a global limit or budget that fails closed while Redis is down.
  static filter::LocalReply storeUnavailable(const std::string& what) {
    filter::LocalReply r;
    r.status = 503;
    r.message = "The rate limit store is unavailable (" + what + " fails closed)";
    r.type = "service_unavailable";
    r.code = "rate_limit_store_unavailable";
    return r;
  }

  // The tightest requests and tokens counters, in OpenAI's header names.
  void addHeaders(filter::HeaderList& headers) const {
    const Micros now = GcraBucket::now();
    for (const bool tokens : {false, true}) {
      const Slot* tight = nullptr;
      std::int64_t left = 0;
      Micros reset = 0;
      for (const auto& s : slots_) {
        if (s.window->tokens != tokens) continue;
        std::int64_t rem;
        Micros rs;
        if (s.bucket) {
          rem = s.bucket->remaining(now);
          rs = s.bucket->resetAfter(now);
        } else {
          rem = std::max<std::int64_t>(0, s.lease->fleetRemaining()) + std::max<std::int64_t>(0, s.lease->held());
          rs = s.lease->resetAfter();
        }
        if (tight == nullptr || rem < left) {
          tight = &s;
          left = rem;
          reset = rs;
        }
      }
      if (tight == nullptr) continue;
      static constexpr const char* kLimit[2] = {"x-ratelimit-limit-requests", "x-ratelimit-limit-tokens"};
      static constexpr const char* kRemaining[2] = {"x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens"};
      static constexpr const char* kReset[2] = {"x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"};
      headers.set(kLimit[tokens], std::to_string(tight->window->capacity));
      headers.set(kRemaining[tokens], std::to_string(std::max<std::int64_t>(0, left)));
      headers.set(kReset[tokens], resetText(reset));
    }
  }

  // More output than reserved: take `need` (rounded up to a step) from
  // every token counter, all or nothing. False with exhausted_ set.
  bool extend(std::int64_t need) {
    const Micros now = GcraBucket::now();
    const std::int64_t step = std::max(need, config_->extend_step);
    for (const std::int64_t n : {step, need}) {
      bool ok = true;
      std::size_t done = 0;
      for (; done < slots_.size(); ++done) {
        auto& s = slots_[done];
        if (!s.window->tokens || s.unmetered) continue;
        const bool got = s.bucket ? s.bucket->take(n, now).granted == n
                                  // A lease may go one block into debt while the next block is fetched.
                                  : (s.lease->take(n) == Lease::Result::Granted || s.lease->charge(n));
        if (!got) {
          ok = false;
          exhausted_ = &s;
          break;
        }
      }
      if (ok) {
        for (auto& s : slots_)
          if (s.window->tokens && !s.unmetered) {
            s.taken += n;
            stats(*s.limit).reserved_tokens.inc(static_cast<double>(n));
          }
        reserved_output_ += n;
        exhausted_ = nullptr;
        return true;
      }
      for (std::size_t i = 0; i < done; ++i) {  // undo the counters that gave
        auto& s = slots_[i];
        if (!s.window->tokens || s.unmetered) continue;
        if (s.bucket) s.bucket->give(n, now);
        else s.lease->give(n);
      }
    }
    return false;
  }

  // onExhausted allow: what was generated is counted anyway.
  void forceCharge(std::int64_t n) {
    const Micros now = GcraBucket::now();
    for (auto& s : slots_) {
      if (!s.window->tokens || s.unmetered) continue;
      if (s.bucket) s.bucket->charge(n, now);
      else s.lease->charge(n);
      s.taken += n;
      stats(*s.limit).overshoot_tokens.inc(static_cast<double>(n));
    }
    reserved_output_ += n;
  }

  void rememberStreamIds(std::string_view events) {
    auto field = [&](std::string_view name) -> std::string {
      const auto at = events.find(name);
      if (at == std::string_view::npos) return {};
      const auto start = at + name.size();
      const auto end = events.find('"', start);
      return end == std::string_view::npos ? std::string() : std::string(events.substr(start, end - start));
    };
    id_ = field("\"id\":\"");
    upstream_model_ = field("\"model\":\"");
    chat_ = events.find("chat.completion.chunk") != std::string_view::npos;
    anthropic_ = events.find("\"type\":\"message_start\"") != std::string_view::npos;
  }

  // Anthropic Messages streams: the index of the content block now open.
  void trackContentBlock(std::string_view events) {
    for (std::size_t at = 0; (at = events.find("\"type\":\"content_block_", at)) != std::string_view::npos; ++at) {
      const auto index = events.find("\"index\":", at);
      if (index == std::string_view::npos) break;
      block_index_ = std::atoi(events.data() + index + 8);
      block_open_ = events.substr(at + 22, 5) != "stop\"";
    }
  }

  // Anthropic's end of a message cut at max_tokens: the open block closes,
  // message_delta says max_tokens (and why), message_stop.
  void finishAnthropicStream(StreamContext& ctx, std::string& out) {
    if (block_open_)
      out += "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":" +
             std::to_string(block_index_) + "}\n\n";
    out += "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\","
           "\"stop_sequence\":null},\"usage\":{\"output_tokens\":" +
           std::to_string(ctx.usage.streamed_output) + "},\"infermesh\":{\"finished_by\":\"rate_limit\",\"limit\":";
    common::appendJsonString(out, exhausted_->limit->name);
    out += "}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
  }

  // Ends the stream as the engine would at max_tokens, then says why.
  void finishStream(StreamContext& ctx, filter::BodyChunk& chunk) {
    finished_ = true;
    stats(*exhausted_->limit).finished.inc();
    if (anthropic_) {
      finishAnthropicStream(ctx, chunk.edit());
      ctx.error_reason.clear();
      callbacks_->endResponse();
      return;
    }
    const std::string id = id_.empty() ? "chatcmpl-" + ctx.request_id : id_;
    std::string head = "data: {\"id\":";
    common::appendJsonString(head, id);
    head += ",\"object\":\"";
    head += chat_ ? "chat.completion.chunk" : "text_completion";
    head += "\",\"created\":" + std::to_string(std::time(nullptr)) + ",\"model\":";
    common::appendJsonString(head, upstream_model_.empty() ? model_->upstream_model : upstream_model_);
    std::string& out = chunk.edit();
    out += head;
    out += chat_ ? ",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n"
                 : ",\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":\"length\"}]}\n\n";
    const std::int64_t output = ctx.usage.streamed_output;
    out += head;
    out += ",\"choices\":[],\"usage\":{\"prompt_tokens\":" + std::to_string(input_) +
           ",\"completion_tokens\":" + std::to_string(output) +
           ",\"total_tokens\":" + std::to_string(input_ + output) + "},\"infermesh\":{\"finished_by\":\"rate_limit\",\"limit\":";
    common::appendJsonString(out, exhausted_->limit->name);
    out += "}}\n\ndata: [DONE]\n\n";
    ctx.error_reason.clear();
    callbacks_->endResponse();
  }

  // Drops the usage-only chunk the proxy asked for: the client did not.
  void stripUsageChunk(filter::BodyChunk& chunk) {
    std::string kept;
    bool dropped = false;
    filter::forEachEvent(chunk.view(), false, [&](std::string_view ev) {
      if (ev.find("\"usage\"") != std::string_view::npos && ev.find("\"choices\":[]") != std::string_view::npos) {
        dropped = true;
        return;
      }
      kept.append(ev);
      kept += "\n\n";
    });
    if (dropped) chunk.replace(std::move(kept));
  }

  bool checkBudget(StreamContext& ctx);

  void publishRemaining(const TenantStats& t, const BudgetLedger::Spent& spent) const {
    const config::Micros limits[3] = {budget_->per_hour, budget_->per_day, budget_->per_month};
    for (const auto& g : t.remaining)
      g.publish(static_cast<double>(std::max<config::Micros>(0, limits[g.window] - spent[g.window])) / 1e6);
  }

  void settle(StreamContext& ctx) {
    const auto& u = ctx.usage;
    const bool served = ctx.response_status >= 200 && ctx.response_status < 300;
    std::int64_t in = u.input >= 0 ? u.input : input_;
    std::int64_t out = u.outputSoFar();
    if (!served && u.streamed_output == 0) {  // the model served nothing, or only says what it read
      if (!u.reported()) in = out = 0;
      else if (u.input < 0) in = 0;
    }
    const std::int64_t actual = in + out;
    const Micros now = GcraBucket::now();
    for (auto& s : slots_) {
      if (!s.window->tokens || s.unmetered) continue;
      const std::int64_t diff = actual - s.taken;
      if (diff < 0) {
        if (s.bucket) s.bucket->give(-diff, now);
        else s.lease->give(-diff);
      } else if (diff > 0) {
        const std::int64_t left = s.bucket ? s.bucket->remaining(now) : std::max<std::int64_t>(0, s.lease->held());
        if (s.bucket) s.bucket->charge(diff, now);
        else s.lease->charge(diff);
        if (diff > left) stats(*s.limit).overshoot_tokens.inc(static_cast<double>(diff - left));
      }
      stats(*s.limit).settled_tokens.inc(static_cast<double>(actual));
    }
    if (served && !finished_ && out > 0) ObservedOutput::instance().record(tenantName(), model_->name, out);
    if (budget_ != nullptr && actual > 0) {
      const config::Micros cost = costOf(*model_, in, u.cached_input, out);
      BudgetLedger::instance().add(budgetOwner(), cost, budget_->global ? config_->store() : nullptr);
      const auto& t = rt_->tenants[budgetIndex(ctx)];
      t.spent.inc(static_cast<double>(cost) / 1e6);
      publishRemaining(t, BudgetLedger::instance().spent(budgetOwner(), budget_->global ? config_->store() : nullptr));
    }
  }

  static config::Micros costOf(const config::ModelConfig& m, std::int64_t in, std::int64_t cached, std::int64_t out) {
    return static_cast<config::Micros>(std::llround(m.cost(in, cached, out) * 1e6));
  }
  std::string budgetOwner() const {
    return budget_->per_api_key && identity_ ? identity_->principal : budget_->tenant;
  }
  std::size_t budgetIndex(const StreamContext& ctx) const {
    return static_cast<std::size_t>(ctx.snapshot->rate_limits->budget_by_tenant[identity_->tenant->index]);
  }

  std::shared_ptr<const Config> config_;
  const Runtime* rt_ = nullptr;
  const filter::Identity* identity_ = nullptr;
  const config::ModelConfig* model_ = nullptr;
  const config::BudgetConfig* budget_ = nullptr;
  std::vector<Slot> slots_;
  const Slot* exhausted_ = nullptr;
  std::int64_t input_ = 0;
  std::int64_t expected_output_ = 0;
  std::int64_t reserved_output_ = 0;
  std::string id_, upstream_model_;
  bool chat_ = true;
  bool anthropic_ = false;  // an Anthropic Messages stream
  bool block_open_ = false;
  int block_index_ = 0;
  bool active_ = false;
  bool sse_ = false;
  bool strip_usage_ = false;
  bool finished_ = false;
  bool overshot_ = false;
  bool settled_ = false;
  bool fetched_once_ = false;
};

const std::string& RateLimitFilter::tenantName() const {
  static const std::string kNone = "-";
  return identity_ && identity_->tenant ? identity_->tenant->name : kNone;
}

// Over budget: refuse, or move the request to the cheapest model of the
// route's budgetDowngrade whose expected cost still fits.
bool RateLimitFilter::checkBudget(StreamContext& ctx) {
  const auto& stats = rt_->tenants[budgetIndex(ctx)];
  if (budget_->global && !budget_->fail_open && config_->store() && !config_->store()->connected()) {
    stats.refused.inc();
    ctx.sendLocalReply(storeUnavailable("the budget of tenant " + budget_->tenant));
    active_ = false;
    return false;
  }
  const auto spent = BudgetLedger::instance().spent(budgetOwner(), budget_->global ? config_->store() : nullptr);
  publishRemaining(stats, spent);
  const config::Micros limits[3] = {budget_->per_hour, budget_->per_day, budget_->per_month};
  auto fits = [&](const config::ModelConfig& m) {
    const config::Micros cost = costOf(m, input_, 0, expected_output_);
    for (int w = 0; w < 3; ++w)
      if (limits[w] > 0 && spent[w] + cost > limits[w]) return false;
    return true;
  };
  auto over = [&] {
    for (int w = 0; w < 3; ++w)
      if (limits[w] > 0 && spent[w] >= limits[w]) return true;
    return false;
  };
  if (!over() && fits(*model_)) return true;
  if (budget_->downgrade && ctx.route != nullptr) {
    const auto ri = static_cast<std::size_t>(ctx.route - ctx.snapshot->routes.data());
    const auto& rl = *ctx.snapshot->rate_limits;
    if (ri < rl.downgrade_by_route.size())
      for (const auto* m : rl.downgrade_by_route[ri]) {
        if (m == model_ || !fits(*m)) continue;
        if (ctx.request_policy != nullptr) {  // governance must allow the cheaper model too
          const auto* regions = ctx.request_policy->regionsFor(*m);
          if (regions != nullptr && regions->empty()) continue;
        }
        stats.downgraded.inc();
        ctx.target_model = m;
        ctx.target_changed = true;
        ctx.routing_reason = "budget_downgrade";
        model_ = m;
        return true;
      }
  }
  stats.refused.inc();
  filter::LocalReply r;
  r.status = 429;
  r.message = "Tenant " + budget_->tenant + " has spent its budget for this window";
  r.type = "budget";
  r.code = "budget_exceeded";
  std::int64_t secs = 0;
  const auto now = std::chrono::system_clock::now();
  const config::Micros cost = costOf(*model_, input_, 0, expected_output_);
  for (int w = 0; w < 3; ++w)  // until every window this request does not fit has ended
    if (limits[w] > 0 && spent[w] + cost > limits[w])
      secs = std::max<std::int64_t>(secs, std::chrono::duration_cast<std::chrono::seconds>(
                                              BudgetLedger::windowEnd(static_cast<BudgetLedger::Window>(w), now) - now)
                                              .count());
  r.extra_headers.emplace_back("retry-after", std::to_string(std::max<std::int64_t>(1, secs)));
  ctx.sendLocalReply(std::move(r));
  active_ = false;
  return false;
}

class Factory final : public filter::FilterFactory {
 public:
  explicit Factory(std::shared_ptr<const Config> c) : config_(std::move(c)) {}
  std::unique_ptr<filter::StreamFilter> create() const override {
    config_->activate();
    return std::make_unique<RateLimitFilter>(config_);
  }

 private:
  std::shared_ptr<const Config> config_;
};

std::shared_ptr<const filter::FilterFactory> build(std::string_view json, std::string& error) {
  auto c = std::make_shared<Config>();
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  simdjson::dom::object obj;
  if (json.empty()) json = "{}";
  if (parser.parse(json.data(), json.size()).get(doc) || doc.get_object().get(obj)) {
    error = "ratelimit config must be a mapping";
    return nullptr;
  }
  for (auto f : obj) {
    const std::string_view k = f.key;
    std::string_view s;
    std::int64_t n = 0;
    if (k == "redis") {
      if (f.value.get_string().get(s) || s.empty()) {
        error = "ratelimit: redis must be \"host:port\"";
        return nullptr;
      }
      const auto colon = s.rfind(':');
      c->redis.host = std::string(s.substr(0, colon));
      if (colon != std::string_view::npos) {
        const std::string port(s.substr(colon + 1));
        char* end = nullptr;
        const long p = std::strtol(port.c_str(), &end, 10);
        if (port.empty() || *end != '\0' || p <= 0 || p > 65535) {
          error = "ratelimit: redis port must be 1..65535";
          return nullptr;
        }
        c->redis.port = static_cast<std::uint16_t>(p);
      }
      c->use_redis = true;
    } else if (k == "redisPasswordFile" || k == "keyPrefix" || k == "stateFile") {
      if (f.value.get_string().get(s)) {
        error = "ratelimit: " + std::string(k) + (k == "keyPrefix" ? " must be a string" : " must be a path");
        return nullptr;
      }
      (k == "redisPasswordFile" ? c->password_file : k == "keyPrefix" ? c->redis.key_prefix : c->state_file) =
          std::string(s);
    } else if (k == "extendTokens") {
      if (f.value.get_int64().get(n) || n < 1 || n > 1000000) {
        error = "ratelimit: extendTokens must be 1..1000000";
        return nullptr;
      }
      c->extend_step = n;
    } else {
      error = "ratelimit: unknown setting \"" + std::string(k) + "\" (redis, redisPasswordFile, keyPrefix, stateFile, extendTokens)";
      return nullptr;
    }
  }
  return std::make_shared<Factory>(std::move(c));
}

const filter::Registration kRegistered{"ratelimit", &build};

}  // namespace
}  // namespace infermesh::ratelimit
