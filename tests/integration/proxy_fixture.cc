#include "tests/integration/proxy_fixture.h"

#include <fstream>
#include <sstream>
#include <thread>

namespace infermesh::testing {

void ProxyTest::SetUpTestSuite() {
  bin_dir = binariesDir();
  const std::string models = "chat-model,slow-model,flaky-model,sluggish-model,embed-model";
  fast_a = startMock("fast-a", {"--models", models});
  fast_b = startMock("fast-b", {"--models", models});
  slow = startMock("slow", {"--models", models, "--chunk-delay-ms", "150", "--chunks", "6"});
  resetting = startMock("resetting", {"--models", models, "--chunk-delay-ms", "20", "--chunks", "8", "--reset-rate", "1"});
  sluggish = startMock("sluggish", {"--models", models, "--ttft-ms", "3000"});
  limited = startMock("limited", {"--models", models, "--error-429-rate", "1", "--retry-after", "30"});
  failing = startMock("failing", {"--models", models, "--error-500-rate", "1"});
  windowed = startMock("windowed", {"--models", models, "--context-window", "50"});
  toggled = startMock("toggled", {"--models", models});
}

void ProxyTest::TearDownTestSuite() {
  for (Mock* m : {&fast_a, &fast_b, &slow, &resetting, &sluggish, &limited, &failing, &windowed, &toggled})
    m->process.reset();
}

Mock ProxyTest::startMock(const std::string& name, std::vector<std::string> args) {
  std::vector<std::string> argv{bin_dir + "/bench/infermesh-mock-model", "--port", "0", "--name", name};
  argv.insert(argv.end(), args.begin(), args.end());
  Mock m;
  m.process = Process::start(argv, "/tmp/infermesh-test-mock-" + name + ".log");
  m.port = portOf(m.process->waitForLine("listening "));
  EXPECT_GT(m.port, 0) << "mock " << name << " did not start";
  return m;
}

std::string ProxyTest::baseConfig(const std::string& listener_extra) const {
  std::ostringstream y;
  y << "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec:\n"
    << "  address: 127.0.0.1:0\n  filters: [{name: router}]\n"
    << "  limits: {maxRequestBodyBytes: 1048576, headerTimeout: 1s, bodyTimeout: 1s, idleTimeout: 5s}\n"
    << listener_extra << "---\n"
    << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: chat-model}\n"
    << "spec: {aliases: [chat-alias], endpoints: [{address: '" << fast_a.address() << "'}, {address: '"
    << fast_b.address() << "'}]}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: slow-model}\n"
    << "spec: {endpoints: [{address: '" << slow.address() << "'}]}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: flaky-model}\n"
    << "spec: {endpoints: [{address: '" << resetting.address() << "'}]}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: sluggish-patient}\n"
    << "spec: {upstreamModel: sluggish-model, endpoints: [{address: '" << sluggish.address() << "'}]}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: sluggish-model}\n"
    << "spec: {endpoints: [{address: '" << sluggish.address() << "'}]}\n---\n"
    // Port 1 on loopback refuses connections: an endpoint that is down.
    << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: dead-model}\n"
    << "spec: {endpoints: [{address: '127.0.0.1:1'}], connectTimeout: 500ms}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: half-dead-model}\n"
    << "spec: {upstreamModel: chat-model, loadBalancer: {policy: round_robin}, outlierDetection: "
    << "{consecutiveFailures: 0}, endpoints: [{address: '127.0.0.1:1'}, {address: '" << fast_a.address()
    << "'}]}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: ejecting-model}\n"
    << "spec: {upstreamModel: chat-model, loadBalancer: {policy: round_robin}, outlierDetection: "
    << "{consecutiveFailures: 1, baseEjectionTime: 60s}, endpoints: [{address: '127.0.0.1:1'}, {address: '"
    << fast_a.address() << "'}]}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: limited-model}\n"
    << "spec: {upstreamModel: chat-model, endpoints: [{address: '" << limited.address() << "'}, {address: '"
    << fast_a.address() << "'}]}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: mixed-model}\n"
    << "spec: {upstreamModel: chat-model, endpoints: [{address: '" << sluggish.address() << "'}, {address: '"
    << fast_a.address() << "'}]}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: impatient}\n"
    << "spec: {order: 1, match: {models: [sluggish-model]}, timeouts: {idle: 300ms}}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: always-429}\n"
    << "spec: {upstreamModel: chat-model, endpoints: [{address: '" << limited.address() << "'}]}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: fallback-429}\n"
    << "spec: {order: 4, match: {headers: [{name: x-test-fallback, value: '429'}]}, model: always-429,"
    << " fallbacks: [{model: chat-model, on: ['429']}]}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: fallback-dead}\n"
    << "spec: {order: 4, match: {headers: [{name: x-test-fallback, value: dead}]}, model: dead-model,"
    << " fallbacks: [{model: chat-model, on: [connect_failure]}]}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: fallback-slow}\n"
    << "spec: {order: 4, match: {headers: [{name: x-test-fallback, value: slow}]}, model: sluggish-patient,"
    << " timeouts: {firstToken: 300ms}, fallbacks: [{model: chat-model, on: [timeout]}]}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: fallback-other-trigger}\n"
    << "spec: {order: 4, match: {headers: [{name: x-test-fallback, value: 5xx-only}]}, model: always-429,"
    << " fallbacks: [{model: chat-model, on: ['5xx']}]}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: first-token}\n"
    << "spec: {order: 3, match: {headers: [{name: x-test-ttft}]}, timeouts: {firstToken: 300ms}}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: deadline}\n"
    << "spec: {order: 2, match: {headers: [{name: x-test-deadline}]}, timeouts: {request: 450ms}}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: echo}\n"
    << "spec: {match: {pathPrefix: /mock/}, model: chat-model}\n---\n"
    << "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: api}\n"
    << "spec: {match: {pathPrefix: /v1/}}\n";
  return y.str();
}

void ProxyTest::startProxy(const std::string& config_yaml, int workers, std::vector<std::string> extra_args) {
  dir.write("config.yaml", config_yaml);
  std::vector<std::string> argv{bin_dir + proxy_binary, "--config", dir.path(), "--admin", "127.0.0.1:0",
                                "--workers", std::to_string(workers), "--drain-timeout", "10"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  proxy = Process::start(argv, dir.path() + "/proxy.log");
  port = portOf(proxy->waitForLine("listener main "));
  admin = portOf(proxy->waitForLine("admin "));
  ASSERT_GT(port, 0) << "proxy did not start; see " << dir.path() << "/proxy.log";
  ASSERT_GT(admin, 0);
}

HttpResponse ProxyTest::chat(const std::string& model, bool stream) {
  return httpRequest(port, "POST", "/v1/chat/completions", chatBody(model, stream));
}

double ProxyTest::scrape(int admin_port, const std::string& name, const std::string& labels) {
  std::istringstream in(httpGetBody(admin_port, "/metrics"));
  double sum = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    const std::string key = line.substr(0, space);
    if (key != name && key.rfind(name + "{", 0) != 0) continue;
    if (!labels.empty() && key.find(labels) == std::string::npos) continue;
    sum += std::stod(line.substr(space + 1));
  }
  return sum;
}

double ProxyTest::metricReaching(const std::string& name, const std::string& labels, double expected) {
  double v = metric(name, labels);
  for (int i = 0; i < 100 && v != expected; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    v = metric(name, labels);
  }
  return v;
}

int ProxyTest::mockConnections(const Mock& m) { return mockStat(m, "connections"); }

int ProxyTest::mockStat(const Mock& m, const std::string& key) {
  const std::string body = httpGetBody(m.port, "/mock/stats");
  const std::string label = "\"" + key + "\":";
  const auto at = body.find(label);
  return at == std::string::npos ? -1 : std::atoi(body.c_str() + at + label.size());
}

std::string ProxyTest::prometheusQuery(const std::string& query) {
  const int prom_port = freePort();
  std::ofstream(dir.path() + "/prometheus.yml")
      << "global: {scrape_interval: 1s}\n"
      << "scrape_configs:\n  - job_name: infermesh\n    static_configs: [{targets: ['127.0.0.1:" << admin << "']}]\n";
  auto prom = Process::start({"/usr/bin/prometheus", "--config.file=" + dir.path() + "/prometheus.yml",
                              "--storage.tsdb.path=" + dir.path() + "/tsdb",
                              "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)},
                             dir.path() + "/prometheus.log");
  std::string body;
  eventually(  // start-up plus a few scrapes
      [&] {
        body = httpGetBody(prom_port, "/api/v1/query?query=" + query);
        return body.find("\"value\":[") != std::string::npos;
      },
      std::chrono::seconds(30), std::chrono::milliseconds(200));
  return body;
}

}  // namespace infermesh::testing
