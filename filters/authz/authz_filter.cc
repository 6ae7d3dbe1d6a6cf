// authz: decides whether the caller (authn's Identity) may use the
// resolved target, by the Policies on the request's listener and route
// (docs/governance.md), and leaves one hash-chained audit record per
// decision. It sits after authn (it needs the caller) and after target
// resolution (it judges the model and the regions that will serve), before
// anything that spends tokens.
//
// It also answers GET /v1/models with the models this caller may use.
#include <simdjson.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>

#include "filters/authz/policy_evaluator.h"
#include "proxy/audit/audit_log.h"
#include "proxy/common/json_string.h"
#include "proxy/common/spiffe_id.h"
#include "proxy/config/snapshot.h"
#include "proxy/filter/filter.h"
#include "proxy/filter/identity.h"
#include "proxy/stats/filter_metrics.h"

namespace infermesh::authz {
namespace {

using filter::FilterStatus;
using filter::StreamContext;

const std::uint32_t kRuntimeSlot = filter::nextRuntimeSlot();

// Per snapshot: counters by policy and rule (their names are config), and
// the audit writer of each listener.
struct AuthzRuntime {
  struct PolicyStats {
    stats::CounterMetric allowed;
    std::vector<stats::CounterMetric> denied;          // by rule, then "default", then "regions"
    std::vector<stats::CounterMetric> dry_run_denied;  // same order
  };
  std::vector<PolicyStats> policies;
  std::vector<std::shared_ptr<audit::AuditLog>> audit;  // by listener index; null: none

  const stats::CounterMetric& deniedBy(const config::PolicyConfig& p, std::string_view rule, bool dry_run) const {
    const auto& s = policies[p.index];
    const auto& list = dry_run ? s.dry_run_denied : s.denied;
    for (std::size_t i = 0; i < p.rules.size(); ++i)
      if (p.rules[i].name == rule) return list[i];
    return list[rule == "default" ? p.rules.size() : p.rules.size() + 1];
  }
};

bool prepare(const config::Snapshot& snap, std::string& error) {
  auto rt = std::make_shared<AuthzRuntime>();
  auto& metrics = stats::FilterMetrics::instance();
  if (snap.governance) {
    for (const auto& p : snap.governance->policies) {
      AuthzRuntime::PolicyStats s;
      s.allowed = metrics.counter("infermesh_authz_allowed_total", "Requests authz allowed, by policy",
                                  {{"policy", p.name}});
      auto add = [&](const std::string& rule) {
        s.denied.push_back(metrics.counter("infermesh_authz_denied_total", "Requests authz refused (403), by policy and rule",
                                           {{"policy", p.name}, {"rule", rule}}));
        s.dry_run_denied.push_back(metrics.counter("infermesh_authz_dry_run_denied_total",
                                                   "Requests a dry-run policy would have refused, by policy and rule",
                                                   {{"policy", p.name}, {"rule", rule}}));
      };
      for (const auto& r : p.rules) add(r.name);
      add("default");
      add("regions");
      rt->policies.push_back(std::move(s));
    }
  }
  for (const auto& l : snap.listeners) {
    if (l.audit_log.empty()) {
      rt->audit.emplace_back();
      continue;
    }
    audit::AuditLogOptions options;
    options.path = l.audit_log;
    options.max_bytes = l.audit_max_bytes;
    options.keep_files = l.audit_keep_files;
    auto log = audit::AuditLog::open(options, error);
    if (!log) {
      error = "Listener/" + l.name + " auditLog: " + error;
      return false;
    }
    rt->audit.push_back(std::move(log));
  }
  if (snap.filter_runtime.size() <= kRuntimeSlot) snap.filter_runtime.resize(kRuntimeSlot + 1);
  snap.filter_runtime[kRuntimeSlot] = std::move(rt);
  return true;
}

struct Config {
  bool list_models = true;
  stats::CounterMetric audit_written;
  stats::CounterMetric audit_dropped;
  stats::CounterMetric routing_header_denied;
  stats::CounterMetric data_class_denied;
  stats::CounterMetric models_listed;
};

std::shared_ptr<const filter::FilterFactory> build(std::string_view json, std::string& error);

const filter::Registration kRegistered{"authz", &build};
const filter::Registration kPrepared{filter::SnapshotPreparer{&prepare}};

void appendField(std::string& out, const char* name, std::string_view value) {
  if (!out.empty()) out += ',';
  out += '"';
  out += name;
  out += "\":";
  if (value.empty()) out += "null";
  else common::appendJsonString(out, value);
}

std::string utcNow() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

class AuthzFilter final : public filter::StreamFilter, public filter::RequestPolicy {
 public:
  explicit AuthzFilter(const Config& config) : config_(config) {}

  FilterStatus onRequestHeaders(StreamContext& ctx, bool) override {
    const auto* g = ctx.snapshot->governance.get();
    route_ = ctx.route ? static_cast<int>(ctx.route - ctx.snapshot->routes.data()) : -1;
    const bool governed = g != nullptr && g->anyPolicy(ctx.listener->index, route_);
    if (config_.list_models && ctx.request.method == "GET" && ctx.request.path() == "/v1/models")
      return listModels(ctx, governed ? g : nullptr);
    if (!governed) return FilterStatus::Continue;
    g_ = g;
    listener_index_ = ctx.listener->index;
    identity_ = ctx.state.get(filter::kIdentity);
    facts_.identity = identity_;
    facts_.route = route_;
    facts_.model = ctx.target_model;
    decided_ = true;

    if (auto refusal = routingHeaderRefusal(ctx)) return deny(ctx, *refusal, "routing_header_not_allowed");
    data_class_ = dataClass(ctx);
    facts_.data_class = data_class_;
    if (identity_ && identity_->tenant && !identity_->tenant->maySend(data_class_)) {
      config_.data_class_denied.inc();
      decision_.outcome = Decision::Outcome::Deny;
      decision_.rule = "dataClasses";
      decision_.reason = "data_class_not_allowed";
      return reply403(ctx, "tenant `" + identity_->tenant->name + "` may not send data of class \"" + data_class_ + "\"");
    }
    decision_ = evaluate(*g, ctx.listener->index, facts_);
    const auto* rt = runtime(ctx);
    if (decision_.dry_run_policy && rt) {
      rt->deniedBy(*decision_.dry_run_policy, decision_.dry_run_rule, true).inc();
      spdlog::info("dry run: Policy/{} rule {} would deny request {}", decision_.dry_run_policy->name,
                   decision_.dry_run_rule, ctx.request_id);
    }
    if (decision_.outcome == Decision::Outcome::Deny) {
      if (rt && decision_.policy) rt->deniedBy(*decision_.policy, decision_.rule, false).inc();
      std::string why = decision_.reason == "no_allowed_region"
                            ? "no endpoint of model `" + (ctx.target_model ? ctx.target_model->name : std::string()) +
                                  "` is in a region policy allows for this request"
                            : "denied by Policy/" + (decision_.policy ? decision_.policy->name : std::string()) +
                                  " rule " + std::string(decision_.rule);
      return reply403(ctx, std::move(why));
    }
    if (rt && decision_.policy) rt->policies[decision_.policy->index].allowed.inc();
    if (ctx.target_model) target_regions_ = regionsOf(*ctx.target_model, decision_, target_region_list_);
    ctx.request_policy = this;
    return FilterStatus::Continue;
  }

  // The router asks before each model it tries: the target was judged
  // above; a fallback is judged on its own.
  const std::vector<std::string>* regionsFor(const config::ModelConfig& model) const override {
    if (&model == facts_.model) return target_regions_;
    for (const auto& j : fallbacks_)
      if (j->model == &model) return j->bound ? &j->regions : nullptr;
    Facts f = facts_;
    f.model = &model;
    auto& j = *fallbacks_.emplace_back(std::make_unique<Judged>());
    j.model = &model;
    j.bound = regionsOf(model, evaluate(*g_, listener_index_, f), j.regions) != nullptr;
    return j.bound ? &j.regions : nullptr;
  }

  void onLog(const StreamContext& ctx) override {
    const auto* rt = runtime(ctx);
    if (rt == nullptr || ctx.listener->index >= rt->audit.size() || !rt->audit[ctx.listener->index]) return;
    const auto* id = ctx.state.get(filter::kIdentity);
    // A decision of this filter, or authn's refusal before it.
    if (!decided_ && !(id && !id->failure.empty())) return;
    std::string r;
    r.reserve(512);
    appendField(r, "time", utcNow());
    appendField(r, "request_id", ctx.request_id);
    appendField(r, "listener", ctx.listener->name);
    appendField(r, "client", ctx.client_address);
    appendField(r, "tenant", id && id->tenant ? std::string_view(id->tenant->name) : std::string_view());
    appendField(r, "principal", id ? std::string_view(id->principal) : std::string_view());
    appendField(r, "auth_method", id ? filter::methodName(id->method) : "none");
    appendField(r, "route", ctx.route ? std::string_view(ctx.route->name) : std::string_view());
    appendField(r, "requested_model", ctx.model);
    appendField(r, "served_model", ctx.target_model && ctx.upstream_attempts > 0 ? std::string_view(ctx.target_model->name)
                                                                                : std::string_view());
    appendField(r, "region", ctx.upstream_region);
    appendField(r, "data_class", data_class_);
    std::string_view decision = "allow";
    if (id && !id->failure.empty()) decision = "unauthenticated";
    else if (decision_.outcome == Decision::Outcome::Deny) decision = "deny";
    else if (decision_.outcome == Decision::Outcome::DryRunDeny) decision = "dry_run_deny";
    appendField(r, "decision", decision);
    const config::PolicyConfig* p = decision_.outcome == Decision::Outcome::DryRunDeny ? decision_.dry_run_policy
                                                                                     : decision_.policy;
    appendField(r, "policy", p ? std::string_view(p->name) : std::string_view());
    appendField(r, "policy_version", p ? std::string_view(p->version) : std::string_view());
    appendField(r, "rule", decision_.outcome == Decision::Outcome::DryRunDeny ? decision_.dry_run_rule : decision_.rule);
    appendField(r, "reason", id && !id->failure.empty() ? std::string_view(id->failure) : decision_.reason);
    r += ",\"status\":" + std::to_string(ctx.response_status);
    if (rt->audit[ctx.listener->index]->submit(std::move(r))) config_.audit_written.inc();
    else config_.audit_dropped.inc();
  }

 private:
  // The endpoint regions `d` leaves `model`, in `out`: null when any
  // region will do, else &out (empty when the model is denied).
  static const std::vector<std::string>* regionsOf(const config::ModelConfig& model, const Decision& d,
                                                  std::vector<std::string>& out) {
    out.clear();
    if (d.outcome != Decision::Outcome::Deny) {
      if (!d.regionBound()) return nullptr;
      for (const auto& ep : model.endpoints)
        if (d.regionPasses(ep.region) && std::find(out.begin(), out.end(), ep.region) == out.end())
          out.push_back(ep.region);
    }
    return &out;
  }

  static const AuthzRuntime* runtime(const StreamContext& ctx) {
    return static_cast<const AuthzRuntime*>(ctx.snapshot->runtime(kRuntimeSlot));
  }

  // The routing preferences a client may send (Listener.clientHeaders)
  // are honoured only where every applicable policy allows them.
  std::optional<std::string> routingHeaderRefusal(const StreamContext& ctx) {
    const bool capability = ctx.request.headers.get("x-infermesh-capability").has_value();
    const bool regions = ctx.request.headers.get("x-infermesh-regions").has_value();
    if (!capability && !regions) return std::nullopt;
    std::optional<std::string> refusal;
    g_->forEachPolicy(ctx.listener->index, route_, [&](const config::PolicyConfig& p) {
      if (refusal) return;
      if (capability && !p.allow_capability_header) refusal = "Policy/" + p.name + " does not allow x-infermesh-capability";
      else if (regions && !p.allow_regions_header) refusal = "Policy/" + p.name + " does not allow x-infermesh-regions";
    });
    if (refusal) config_.routing_header_denied.inc();
    return refusal;
  }

  // From the policy's header when the caller is trusted to set it, else the
  // tenant's default.
  std::string dataClass(const StreamContext& ctx) const {
    std::string dc = identity_ && identity_->tenant ? identity_->tenant->default_data_class : std::string("internal");
    g_->forEachPolicy(ctx.listener->index, route_, [&](const config::PolicyConfig& p) {
      const auto v = ctx.request.headers.get(p.data_class_header);
      if (!v) return;
      bool trusted = identity_ && identity_->tenant &&
                     std::find(p.data_class_trusted_tenants.begin(), p.data_class_trusted_tenants.end(),
                               identity_->tenant) != p.data_class_trusted_tenants.end();
      for (const auto& s : p.data_class_trusted_spiffe_ids)
        trusted = trusted || (!ctx.peer_identity.empty() && common::spiffeIdMatches(ctx.peer_identity, s));
      if (trusted) dc = std::string(*v);
    });
    return dc;
  }

  FilterStatus deny(StreamContext& ctx, std::string message, const char* reason) {
    decision_.outcome = Decision::Outcome::Deny;
    decision_.rule = "routingHeaders";
    decision_.reason = reason;
    return reply403(ctx, std::move(message));
  }

  FilterStatus reply403(StreamContext& ctx, std::string message) {
    filter::LocalReply reply;
    reply.status = 403;
    reply.type = "permission_error";
    reply.code = std::string(decision_.reason);
    reply.message = std::move(message);
    if (decision_.policy) reply.extra_headers.emplace_back("x-infermesh-policy", decision_.policy->name + "/" + std::string(decision_.rule));
    ctx.sendLocalReply(std::move(reply));
    return FilterStatus::Stop;
  }

  // OpenAI's model list, narrowed to what policy lets this caller use.
  FilterStatus listModels(StreamContext& ctx, const config::Governance* g) {
    config_.models_listed.inc();
    Facts f;
    f.identity = ctx.state.get(filter::kIdentity);
    f.route = route_;
    if (g) {
      g_ = g;
      identity_ = f.identity;
      f.data_class = data_class_ = dataClass(ctx);
    }
    std::string body = "{\"object\":\"list\",\"data\":[";
    bool first = true;
    for (const auto& m : ctx.snapshot->models) {
      if (g) {
        f.model = &m;
        if (evaluate(*g, ctx.listener->index, f).outcome == Decision::Outcome::Deny) continue;
      }
      if (!first) body += ',';
      first = false;
      body += "{\"id\":";
      common::appendJsonString(body, m.name);
      body += ",\"object\":\"model\",\"created\":0,\"owned_by\":\"infermesh\",\"capabilities\":[";
      for (std::size_t i = 0; i < m.capabilities.size(); ++i) {
        if (i) body += ',';
        common::appendJsonString(body, m.capabilities[i]);
      }
      body += "],\"aliases\":[";
      for (std::size_t i = 0; i < m.aliases.size(); ++i) {
        if (i) body += ',';
        common::appendJsonString(body, m.aliases[i]);
      }
      body += "]";
      if (m.context_window) body += ",\"context_window\":" + std::to_string(m.context_window);
      body += '}';
    }
    body += "]}";
    filter::LocalReply reply;
    reply.status = 200;
    reply.code = "models_list";
    reply.body = std::move(body);
    reply.content_type = "application/json";
    ctx.sendLocalReply(std::move(reply));
    return FilterStatus::Stop;
  }

  const Config& config_;
  const config::Governance* g_ = nullptr;
  const filter::Identity* identity_ = nullptr;
  std::uint32_t listener_index_ = 0;
  int route_ = -1;
  bool decided_ = false;
  std::string data_class_;
  Facts facts_;
  Decision decision_;
  // The target's regions (judged in onRequestHeaders), then fallbacks'
  // as the router asks; their addresses stay valid for the stream.
  const std::vector<std::string>* target_regions_ = nullptr;
  std::vector<std::string> target_region_list_;
  struct Judged {
    const config::ModelConfig* model = nullptr;
    bool bound = false;
    std::vector<std::string> regions;
  };
  mutable std::vector<std::unique_ptr<Judged>> fallbacks_;
};

class AuthzFactory final : public filter::FilterFactory {
 public:
  explicit AuthzFactory(bool list_models) {
    auto& metrics = stats::FilterMetrics::instance();
    config_.list_models = list_models;
    config_.audit_written = metrics.counter("infermesh_audit_records_total", "Audit records queued for writing");
    config_.audit_dropped = metrics.counter("infermesh_audit_dropped_total",
                                            "Audit records dropped because the writer's queue was full");
    config_.routing_header_denied = metrics.counter(
        "infermesh_authz_routing_header_denied_total", "Requests refused for a routing header their policy does not allow");
    config_.data_class_denied = metrics.counter("infermesh_authz_data_class_denied_total",
                                                "Requests refused for a data class their tenant may not send");
    config_.models_listed = metrics.counter("infermesh_models_list_total", "GET /v1/models answered by the proxy");
  }
  std::unique_ptr<filter::StreamFilter> create() const override { return std::make_unique<AuthzFilter>(config_); }

 private:
  Config config_;
};

std::shared_ptr<const filter::FilterFactory> build(std::string_view json, std::string& error) {
  simdjson::dom::parser parser;
  simdjson::dom::object obj;
  if (parser.parse(json.data(), json.size()).get(obj)) {
    error = "config must be a mapping";
    return nullptr;
  }
  bool list_models = true;
  for (auto [key, value] : obj) {
    if (key == "listModels") {
      if (value.get(list_models)) {
        error = "listModels: must be true or false";
        return nullptr;
      }
    } else {
      error = std::string(key) + ": unknown field (listModels; policies are Policy resources)";
      return nullptr;
    }
  }
  return std::make_shared<AuthzFactory>(list_models);
}

}  // namespace
}  // namespace infermesh::authz
