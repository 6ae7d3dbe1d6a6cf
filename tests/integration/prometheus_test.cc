// The proxy's /metrics as real Prometheus tools see it.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <thread>

#include "tests/integration/proxy_fixture.h"

namespace infermesh::testing {
namespace {

using namespace std::chrono_literals;

std::string run(const std::string& cmd, int& status) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  status = ::pclose(p);
  return out;
}


TEST_F(ProxyTest, PromtoolAcceptsTheMetrics) {
  startProxy(baseConfig());
  ASSERT_EQ(chat("chat-model").status, 200);
  ASSERT_EQ(chat("zzz").status, 404);
  std::ofstream(dir.path() + "/metrics.txt") << httpGetBody(admin, "/metrics");
  int status = -1;
  const std::string out = run("promtool check metrics < " + dir.path() + "/metrics.txt 2>&1", status);
  EXPECT_EQ(status, 0) << out;
}

TEST_F(ProxyTest, PrometheusScrapesTheProxy) {
  startProxy(baseConfig());
  ASSERT_EQ(chat("chat-model").status, 200);
  const int prom_port = freePort();
  std::ofstream(dir.path() + "/prometheus.yml")
      << "global: {scrape_interval: 1s}\n"
      << "scrape_configs:\n  - job_name: infermesh\n    static_configs: [{targets: ['127.0.0.1:" << admin << "']}]\n";
  auto prom = Process::start({"/usr/bin/prometheus", "--config.file=" + dir.path() + "/prometheus.yml",
                              "--storage.tsdb.path=" + dir.path() + "/tsdb",
                              "--web.listen-address=127.0.0.1:" + std::to_string(prom_port)},
                             dir.path() + "/prometheus.log");
  const std::string query =
      "/api/v1/query?query=infermesh_http_requests_total%7Bmodel%3D%22chat-model%22%2Cstatus_class%3D%222xx%22%7D";
  std::string body;
  for (int i = 0; i < 150; ++i) {  // up to 30 s: start-up plus a few scrapes
    body = httpGetBody(prom_port, query);
    if (body.find("\"value\":[") != std::string::npos) break;
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_NE(body.find("\"route\":\"api\""), std::string::npos) << body;
  EXPECT_NE(body.find("\"1\"]"), std::string::npos) << body;
}

}  // namespace
}  // namespace infermesh::testing
