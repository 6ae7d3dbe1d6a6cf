#include "proxy/config/rate_limit_compiler.h"

#include <algorithm>
#include <cmath>

namespace infermesh::config {


const char* LimitWindow::unit() const { return tokens ? "tokens" : "requests"; }

namespace {

std::string at(const std::string& field, int i) { return field + "[" + std::to_string(i) + "]"; }

constexpr std::int64_t kMaxLimit = std::int64_t{1} << 40;

class RateLimitCompiler {
 public:
  RateLimitCompiler(const Resources& r, Snapshot& snap, ConfigErrors& errors) : r_(r), snap_(snap), errors_(errors) {}

  std::shared_ptr<const RateLimits> run() {
    auto rl = std::make_shared<RateLimits>();
    rl_ = rl.get();
    rl->by_tenant.resize(r_.tenants.size());
    rl->budget_by_tenant.assign(r_.tenants.size(), -1);
    rl->by_route.resize(snap_.routes.size());
    rl->downgrade_by_route.resize(snap_.routes.size());
    rl->by_model.resize(snap_.models.size());
    for (std::size_t i = 0; i < r_.tenants.size(); ++i) {
      const auto& t = r_.tenants[i];
      for (int j = 0; j < t.spec.limits_size(); ++j)
        limit(t, t.spec.limits(j), at("spec.limits", j), kByTenant, rl->by_tenant[i]);
      if (t.spec.has_budget()) budget(t, i);
    }
    for (const auto& rt : r_.routes) {
      const int idx = routeIndex(rt.name);
      if (idx < 0) continue;  // not selected for this node
      for (int j = 0; j < rt.spec.limits_size(); ++j)
        limit(rt, rt.spec.limits(j), at("spec.limits", j), kByRoute, rl->by_route[static_cast<std::size_t>(idx)]);
      downgrade(rt, rl->downgrade_by_route[static_cast<std::size_t>(idx)]);
    }
    bool any_tokenizer = false;
    for (std::size_t i = 0; i < r_.models.size() && i < snap_.models.size(); ++i) {
      const auto& m = r_.models[i];
      for (int j = 0; j < m.spec.limits_size(); ++j)
        limit(m, m.spec.limits(j), at("spec.limits", j), kByModel, rl->by_model[i]);
      any_tokenizer = any_tokenizer || m.spec.has_tokenizer();
    }
    if (any_tokenizer) {
      rl->tokenizer_by_model.resize(snap_.models.size());
      for (std::size_t i = 0; i < r_.models.size() && i < snap_.models.size(); ++i) tokenizer(r_.models[i], i);
    }
    bool any_downgrade = false;
    for (const auto& d : rl->downgrade_by_route) any_downgrade = any_downgrade || !d.empty();
    if (rl->limits.empty() && rl->budgets.empty() && !any_downgrade && !any_tokenizer) return nullptr;
    return rl;
  }

 private:
  int routeIndex(std::string_view name) const {
    for (std::size_t i = 0; i < snap_.routes.size(); ++i)
      if (snap_.routes[i].name == name) return static_cast<int>(i);
    return -1;
  }

  template <typename Spec>
  void limit(const Resource<Spec>& owner, const v1::RateLimit& spec, const std::string& path, LimitKey own,
             std::vector<std::uint32_t>& index) {
    RateLimitConfig lc;
    const std::string kind = owner.document().substr(0, owner.document().find('/'));
    if (spec.name().empty()) {
      errors_.push_back(owner.error(path + ".name", "is required (it names the limit in metrics and headers)"));
      return;
    }
    lc.name = kind + "/" + owner.name + "/" + spec.name();
    for (const auto& other : rl_->limits)
      if (other.name == lc.name) errors_.push_back(owner.error(path + ".name", "duplicate limit name"));
    lc.per = own;
    for (int i = 0; i < spec.per_size(); ++i) {
      const auto& k = spec.per(i);
      if (k == "tenant") lc.per |= kByTenant;
      else if (k == "apiKey" || k == "api_key") lc.per |= kByApiKey;
      else if (k == "model") lc.per |= kByModel;
      else if (k == "route") lc.per |= kByRoute;
      else errors_.push_back(owner.error(at(path + ".per", i), "must be tenant, apiKey, model or route"));
    }
    auto window = [&](std::uint64_t n, bool tokens, std::int64_t ms, const char* field) {
      if (n == 0) return;
      if (n > static_cast<std::uint64_t>(kMaxLimit)) {
        errors_.push_back(owner.error(path + "." + field, "is too large"));
        return;
      }
      lc.windows.push_back(LimitWindow{tokens, std::chrono::milliseconds(ms), static_cast<std::int64_t>(n)});
    };
    window(spec.requests_per_second(), false, 1000, "requestsPerSecond");
    window(spec.requests_per_minute(), false, 60000, "requestsPerMinute");
    window(spec.tokens_per_minute(), true, 60000, "tokensPerMinute");
    window(spec.tokens_per_hour(), true, 3600000, "tokensPerHour");
    window(spec.tokens_per_day(), true, 86400000, "tokensPerDay");
    if (lc.windows.empty())
      errors_.push_back(owner.error(path, "sets no limit: give requestsPerSecond, requestsPerMinute, "
                                          "tokensPerMinute, tokensPerHour or tokensPerDay"));
    if (spec.scope() == "global") lc.global = true;
    else if (!spec.scope().empty() && spec.scope() != "local")
      errors_.push_back(owner.error(path + ".scope", "must be local or global"));
    if (spec.on_exhausted() == "allow") lc.finish = false;
    else if (!spec.on_exhausted().empty() && spec.on_exhausted() != "finish")
      errors_.push_back(owner.error(path + ".onExhausted", "must be finish or allow"));
    if (spec.fail_mode() == "closed") lc.fail_open = false;
    else if (!spec.fail_mode().empty() && spec.fail_mode() != "open")
      errors_.push_back(owner.error(path + ".failMode", "must be open or closed"));
    if (spec.expected_output_floor() > 0) lc.output_floor = static_cast<std::int64_t>(spec.expected_output_floor());
    std::int64_t smallest = 0;
    for (const auto& w : lc.windows)
      if (w.tokens && (smallest == 0 || w.capacity < smallest)) smallest = w.capacity;
    if (spec.block_tokens() > 0) {
      lc.block = static_cast<std::int64_t>(spec.block_tokens());
      if (!lc.global) errors_.push_back(owner.error(path + ".blockTokens", "applies to global limits only"));
      else if (smallest > 0 && lc.block > smallest)
        errors_.push_back(owner.error(path + ".blockTokens", "is larger than the limit itself"));
    } else {
      lc.block = std::max<std::int64_t>(100, smallest / 50);
      if (smallest > 0) lc.block = std::min(lc.block, smallest);
    }
    lc.signature = lc.name + "|" + std::to_string(lc.per) + (lc.global ? "|g" : "|l");
    for (const auto& w : lc.windows)
      lc.signature += "|" + std::string(w.unit()) + ":" + std::to_string(w.capacity) + "/" +
                      std::to_string(w.window.count());
    lc.index = static_cast<std::uint32_t>(rl_->limits.size());
    index.push_back(lc.index);
    rl_->limits.push_back(std::move(lc));
  }

  static bool money(double v, Micros& out) {
    if (!(v >= 0) || v > 1e12) return false;
    out = static_cast<Micros>(std::llround(v * 1e6));
    return true;
  }

  void budget(const Resource<v1::Tenant>& t, std::size_t tenant_index) {
    const auto& b = t.spec.budget();
    BudgetConfig bc;
    bc.tenant = t.name;
    if (!money(b.per_hour(), bc.per_hour)) errors_.push_back(t.error("spec.budget.perHour", "must be >= 0"));
    if (!money(b.per_day(), bc.per_day)) errors_.push_back(t.error("spec.budget.perDay", "must be >= 0"));
    if (!money(b.per_month(), bc.per_month)) errors_.push_back(t.error("spec.budget.perMonth", "must be >= 0"));
    if (bc.per_hour == 0 && bc.per_day == 0 && bc.per_month == 0)
      errors_.push_back(t.error("spec.budget", "sets no budget: give perHour, perDay or perMonth"));
    bc.per_api_key = b.per_api_key();
    if (b.scope() == "global") bc.global = true;
    else if (!b.scope().empty() && b.scope() != "local")
      errors_.push_back(t.error("spec.budget.scope", "must be local or global"));
    if (b.on_exceeded() == "downgrade") bc.downgrade = true;
    else if (!b.on_exceeded().empty() && b.on_exceeded() != "reject")
      errors_.push_back(t.error("spec.budget.onExceeded", "must be reject or downgrade"));
    if (b.fail_mode() == "closed") bc.fail_open = false;
    else if (!b.fail_mode().empty() && b.fail_mode() != "open")
      errors_.push_back(t.error("spec.budget.failMode", "must be open or closed"));
    rl_->budget_by_tenant[tenant_index] = static_cast<int>(rl_->budgets.size());
    rl_->budgets.push_back(std::move(bc));
  }

  void downgrade(const Resource<v1::Route>& rt, std::vector<const ModelConfig*>& out) {
    for (int i = 0; i < rt.spec.budget_downgrade_size(); ++i) {
      const auto* m = snap_.findModel(rt.spec.budget_downgrade(i));
      if (m == nullptr) {
        ConfigError e = rt.error(at("spec.budgetDowngrade", i), "model \"" + rt.spec.budget_downgrade(i) +
                                                                    "\" is not defined");
        e.dangling_reference = true;
        errors_.push_back(std::move(e));
        continue;
      }
      out.push_back(m);
    }
    std::stable_sort(out.begin(), out.end(), [](const ModelConfig* a, const ModelConfig* b) {
      return a->price_in_per_1k + a->price_out_per_1k < b->price_in_per_1k + b->price_out_per_1k;
    });
  }

  void tokenizer(const Resource<v1::Model>& m, std::size_t index) {
    if (!m.spec.has_tokenizer()) return;
    const auto& t = m.spec.tokenizer();
    if (t.file().empty()) errors_.push_back(m.error("spec.tokenizer.file", "is required"));
    if (t.encoding() != "cl100k_base" && t.encoding() != "o200k_base")
      errors_.push_back(m.error("spec.tokenizer.encoding", "must be cl100k_base or o200k_base"));
    rl_->tokenizer_by_model[index] = TokenizerRef{t.file(), t.encoding()};
  }

  const Resources& r_;
  Snapshot& snap_;
  ConfigErrors& errors_;
  RateLimits* rl_ = nullptr;
};

}  // namespace

void compileRateLimits(const Resources& resources, Snapshot& snap, ConfigErrors& errors) {
  snap.rate_limits = RateLimitCompiler(resources, snap, errors).run();
}

}  // namespace infermesh::config
