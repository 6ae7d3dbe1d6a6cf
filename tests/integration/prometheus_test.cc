// The proxy's /metrics as real Prometheus tools see it.
#include <cstdio>
#include <fstream>

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
  const std::string body =
      prometheusQuery("infermesh_http_requests_total%7Bmodel%3D%22chat-model%22%2Cstatus_class%3D%222xx%22%7D");
  EXPECT_NE(body.find("\"route\":\"api\""), std::string::npos) << body;
  EXPECT_NE(body.find("\"1\"]"), std::string::npos) << body;
}

}  // namespace
}  // namespace infermesh::testing
