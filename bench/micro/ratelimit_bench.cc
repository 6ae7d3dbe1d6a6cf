// What token limits cost per request: one request through authn + authz +
// ratelimit (admission: the body read, input counted, the reservation
// taken) and its JSON answer back (usage extracted, settled), run through
// the filter manager on a snapshot compiled from YAML, as the proxy does.
// A local limit, a global one (its blocks leased from a real redis-server
// started here; most requests never wait on it) and a local budget; the
// authn + authz chain alone is BM_GovernanceOnly; BM_Telemetry adds the
// telemetry filter instead.
#include <benchmark/benchmark.h>

#include <thread>

#include "proxy/config/compiler.h"
#include "proxy/config/yaml_loader.h"
#include "proxy/filter/filter_manager.h"
#include "tests/support/jwt_signer.h"
#include "tests/support/process.h"
#include "tests/support/redis_server.h"

namespace infermesh::filter {
namespace {

struct Fixture {
  testing::RedisServer redis;
  testing::TempDir dir;
  std::shared_ptr<const config::Snapshot> snap;

  Fixture() {
    std::string y = "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\n"
                    "spec: {address: 127.0.0.1:0, filters: [{name: authn}, {name: authz}, {name: ratelimit}, "
                    "{name: router}]}\n";
    auto doc = [&](const std::string& kind, const std::string& name, const std::string& spec) {
      y += "---\napiVersion: infermesh.io/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n";
    };
    doc("Model", "chat", "{endpoints: [{address: '127.0.0.1:9'}], pricing: {inputPer1kTokens: 0.001, outputPer1kTokens: 0.002}}");
    doc("Route", "v1", "{match: {pathPrefix: /v1/}}");
    // Limits large enough never to refuse while the benchmark runs.
    doc("Tenant", "local", "{apiKeys: [{name: k, sha256: " + testing::sha256Hex("key-local") +
                               "}], limits: [{name: tpm, per: [apiKey], tokensPerMinute: 1000000000000, "
                               "requestsPerSecond: 1000000000}]}");
    doc("Tenant", "global", "{apiKeys: [{name: k, sha256: " + testing::sha256Hex("key-global") +
                                "}], limits: [{name: tpm, tokensPerMinute: 1000000000000, scope: global, "
                                "blockTokens: 1000000}]}");
    doc("Tenant", "budget", "{apiKeys: [{name: k, sha256: " + testing::sha256Hex("key-budget") +
                                "}], budget: {perMonth: 1000000000}}");
    doc("Policy", "p", "{listeners: [main], defaultAction: allow}");
    config::YamlLoader loader;
    loader.loadText(y, "bench.yaml");
    auto r = config::compile(loader.resources(), 1);
    if (!r.snapshot) throw std::runtime_error(config::joinErrors(r.errors));
    std::string error;
    if (!FilterRegistry::instance().prepare(*r.snapshot, error)) throw std::runtime_error(error);
    snap = r.snapshot;
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

const std::string kBody =
    R"({"model":"chat","max_tokens":64,"messages":[{"role":"system","content":"You are terse."},)"
    R"({"role":"user","content":"Summarise the attached meeting notes in three bullet points, please."}]})";
const std::string kAnswer =
    R"({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"chat","choices":[{"index":0,)"
    R"("message":{"role":"assistant","content":"- one\n- two\n- three"},"finish_reason":"stop"}],)"
    R"("usage":{"prompt_tokens":31,"completion_tokens":12,"total_tokens":43}})";

void run(benchmark::State& state, const std::vector<std::string>& names, const std::string& key) {
  auto& f = fixture();
  const std::string ratelimit_config =
      "{\"redis\":\"127.0.0.1:" + std::to_string(f.redis.port()) + "\",\"stateFile\":\"" + f.dir.path() + "/state\"}";
  std::vector<std::shared_ptr<const FilterFactory>> factories;
  for (const auto& n : names) {
    std::string error;
    factories.push_back((*FilterRegistry::instance().find(n))(n == "ratelimit" ? ratelimit_config : "{}", error));
    if (!factories.back()) throw std::runtime_error(error);
  }
  auto once = [&] {
    StreamContext ctx;
    ctx.snapshot = f.snap;
    ctx.listener = &f.snap->listeners[0];
    ctx.route = &f.snap->routes[0];
    ctx.target_model = &f.snap->models[0];
    ctx.model = "chat";  // as target resolution leaves it
    ctx.request.method = "POST";
    ctx.request.target = "/v1/chat/completions";
    ctx.request.headers.add("authorization", "Bearer " + key);
    std::vector<std::unique_ptr<StreamFilter>> chain;
    for (const auto& fa : factories) chain.push_back(fa->create());
    FilterManager fm(ctx, std::move(chain));
    fm.requestHeaders(false);
    benchmark::DoNotOptimize(fm.requestBody(kBody, true));
    if (ctx.local_reply) return ctx.local_reply->code;
    ResponseHead head;
    head.status = 200;
    head.headers.add("content-type", "application/json");
    fm.responseHeaders(head, false);
    BodyChunk answer(kAnswer);
    fm.responseBody(answer, true);
    ctx.response_status = 200;
    ctx.upstream_attempts = 1;  // as the router leaves it
    fm.complete();
    return std::string();
  };
  // A global limit's first request starts the lease of a block (there is
  // no worker to wait on here): wait until it is held.
  std::string refused = once();
  for (int i = 0; i < 200 && !refused.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    refused = once();
  }
  for (auto _ : state) {
    refused = once();
    if (!refused.empty()) {
      state.SkipWithError(refused.c_str());
      break;
    }
  }
}

void BM_GovernanceOnly(benchmark::State& s) { run(s, {"authn", "authz"}, "key-local"); }
void BM_LocalTokenLimit(benchmark::State& s) { run(s, {"authn", "authz", "ratelimit"}, "key-local"); }
void BM_GlobalTokenLimit(benchmark::State& s) { run(s, {"authn", "authz", "ratelimit"}, "key-global"); }
void BM_LocalBudget(benchmark::State& s) { run(s, {"authn", "authz", "ratelimit"}, "key-budget"); }
BENCHMARK(BM_GovernanceOnly);
BENCHMARK(BM_LocalTokenLimit);
BENCHMARK(BM_GlobalTokenLimit);
BENCHMARK(BM_LocalBudget);
// The telemetry filter on the same request and answer (its series found in
// the worker's cache after the first).
void BM_Telemetry(benchmark::State& s) { run(s, {"authn", "authz", "telemetry"}, "key-local"); }
BENCHMARK(BM_Telemetry);

}  // namespace
}  // namespace infermesh::filter
