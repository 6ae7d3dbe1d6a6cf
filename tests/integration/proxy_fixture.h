#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/http_client.h"
#include "tests/support/process.h"

namespace infermesh::testing {

// Where the binaries under test are: this build's, or INFERMESH_TEST_BIN_DIR
// when set (tests/sanitizers.sh points it at the sanitizer build, so the
// proxies and control planes these tests start run under ASan and UBSan).
inline std::string binariesDir() {
  const char* dir = std::getenv("INFERMESH_TEST_BIN_DIR");
  return dir != nullptr && *dir != '\0' ? dir : INFERMESH_BIN_DIR;
}

// Mock model servers shared by a test suite (started once), and a proxy per
// test, all on 127.0.0.1 with ports picked by the kernel.
struct Mock {
  std::unique_ptr<Process> process;
  int port = 0;
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
};

class ProxyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();
  static Mock startMock(const std::string& name, std::vector<std::string> args);

  // The YAML the proxy starts with; tests may override parts.
  std::string baseConfig(const std::string& listener_extra = "") const;
  void startProxy(const std::string& config_yaml, int workers = 1, std::vector<std::string> extra_args = {});
  HttpResponse chat(const std::string& model, bool stream = false);
  // Sum of a metric's samples whose label text contains `labels`.
  double metric(const std::string& name, const std::string& labels = "") { return scrape(admin, name, labels); }
  static double scrape(int admin_port, const std::string& name, const std::string& labels = "");
  // The metric once it reaches `expected` (a stream is counted just after
  // its last byte is written, so a fast client can scrape before that), or
  // its value after 2 s.
  double metricReaching(const std::string& name, const std::string& labels, double expected);
  int mockConnections(const Mock& m);
  // A number from the mock's /mock/stats ("requests", "activations" ...).
  static int mockStat(const Mock& m, const std::string& key);
  // Starts a real Prometheus scraping this test's proxy every second and
  // returns the answer of `/api/v1/query?query=<query>` (URL-encoded) once
  // it holds a value, or the last answer after 30 s.
  std::string prometheusQuery(const std::string& query);

  // One YAML document of `kind`, for building configs in tests.
  static std::string doc(const std::string& kind, const std::string& name, const std::string& spec) {
    return "---\napiVersion: infermesh.io/v1\nkind: " + kind + "\nmetadata: {name: " + name + "}\nspec: " + spec + "\n";
  }
  // Whether an OpenAI-style error body carries `code`.
  static bool hasCode(const HttpResponse& r, const std::string& code) {
    return r.body.find("\"code\":\"" + code + "\"") != std::string::npos;
  }

  static inline Mock fast_a, fast_b, slow, resetting, sluggish, limited, failing, windowed, toggled;
  static inline std::string bin_dir;
  TempDir dir;
  std::string proxy_binary = "/proxy/infermesh-proxy";  // under bin_dir
  std::unique_ptr<Process> proxy;
  int port = 0;
  int admin = 0;
};

}  // namespace infermesh::testing
