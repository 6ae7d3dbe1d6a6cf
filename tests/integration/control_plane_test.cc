// infermesh-control with two real proxies and mock model servers: config
// edits reach traffic, bad edits never do, and proxies ride out the control
// plane going away.
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "tests/integration/proxy_fixture.h"

namespace infermesh::testing {
namespace {

using namespace std::chrono_literals;

struct Proxy {
  std::unique_ptr<Process> process;
  int port = 0;
  int admin = 0;
};

class ControlPlaneTest : public ProxyTest {
 protected:
  std::string models() const {
    return "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: chat-model}\n"
           "spec: {aliases: [chat-alias], endpoints: [{address: '" + fast_a.address() + "'}]}\n---\n"
           "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: slow-model}\n"
           "spec: {endpoints: [{address: '" + slow.address() + "'}]}\n";
  }
  static std::string listener(const std::string& name, const std::string& role) {
    return "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: " + name + "}\n"
           "spec: {address: '127.0.0.1:0', filters: [{name: router}], nodeSelector: {role: " + role + "}}\n";
  }
  static std::string route(const std::string& extra_alias_target = "") {
    std::string r =
        "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: api}\nspec: {match: {pathPrefix: /v1/}}\n";
    if (!extra_alias_target.empty())
      r += "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: pinned}\n"
           "spec: {order: 5, match: {headers: [{name: x-pin}]}, model: " + extra_alias_target + "}\n";
    return r;
  }

  void SetUp() override {
    config_dir = dir.path() + "/config";
    std::filesystem::create_directories(config_dir);
    writeConfig("models.yaml", models());
    writeConfig("listeners.yaml", listener("outbound", "sidecar") + "---\n" + listener("inbound", "node"));
    writeConfig("routes.yaml", route());
    startControlPlane("127.0.0.1:0");
  }

  void writeConfig(const std::string& name, const std::string& text) {
    const std::string tmp = config_dir + "/." + name + ".tmp";
    { std::ofstream(tmp) << text; }
    std::filesystem::rename(tmp, config_dir + "/" + name);
  }

  void startControlPlane(const std::string& xds_address) {
    control = Process::start({bin_dir + "/controlplane/infermesh-control", "--config-dir", config_dir, "--xds-address",
                              xds_address, "--admin-address", "127.0.0.1:0"},
                             dir.path() + "/control.log");
    xds = control->waitForLine("xds ");
    control_admin = portOf(control->waitForLine("admin "));
    ASSERT_FALSE(xds.empty());
    ASSERT_GT(control_admin, 0);
  }

  Proxy startMeshProxy(const std::string& id, const std::string& role, const std::string& listener_name) {
    Proxy p;
    p.process = Process::start({bin_dir + "/proxy/infermesh-proxy", "--control-plane", xds, "--node-id", id,
                                "--node-labels", "role=" + role, "--config-cache", dir.path() + "/" + id + ".cache",
                                "--admin", "127.0.0.1:0", "--workers", "1"},
                               dir.path() + "/" + id + ".log");
    p.admin = portOf(p.process->waitForLine("admin "));
    p.port = portOf(p.process->waitForLine("listener " + listener_name + " "));
    EXPECT_GT(p.port, 0) << id << " got no listener; see " << dir.path() << "/" << id << ".log";
    return p;
  }

  int status(const Proxy& p, const std::string& model, std::map<std::string, std::string> headers = {}) {
    return httpRequest(p.port, "POST", "/v1/chat/completions", chatBody(model, false), headers).status;
  }

  std::string config_dir;
  std::unique_ptr<Process> control;
  std::string xds;
  int control_admin = 0;
};

TEST_F(ControlPlaneTest, NodesGetTheirListenersAndFollowEdits) {
  Proxy sidecar = startMeshProxy("sidecar-1", "sidecar", "outbound");
  Proxy node = startMeshProxy("node-1", "node", "inbound");
  EXPECT_EQ(status(sidecar, "chat-model"), 200);
  EXPECT_EQ(status(node, "chat-alias"), 200);
  EXPECT_EQ(scrape(sidecar.admin, "infermesh_xds_connected"), 1);
  // Each node got only its own listener.
  EXPECT_EQ(httpGetBody(sidecar.admin, "/listeners").find("inbound"), std::string::npos);

  // An edit: a new alias and a pinned route. Both proxies follow.
  std::string edited = models();
  edited.replace(edited.find("[chat-alias]"), 12, "[chat-alias, brand-new]");
  writeConfig("models.yaml", edited);
  writeConfig("routes.yaml", route("slow-model"));
  EXPECT_TRUE(eventually([&] { return status(sidecar, "brand-new") == 200 && status(node, "brand-new") == 200; }));
  auto pinned = httpRequest(sidecar.port, "POST", "/v1/chat/completions", chatBody("chat-model", false), {{"x-pin", "1"}});
  EXPECT_NE(pinned.headers["x-mock-server"], "fast-a");  // slow-model lives on the "slow" mock

  const std::string st = httpGetBody(control_admin, "/status");
  EXPECT_NE(st.find("\"id\":\"sidecar-1\""), std::string::npos) << st;
  EXPECT_NE(st.find("\"id\":\"node-1\""), std::string::npos);
  EXPECT_NE(st.find("\"role\":\"node\""), std::string::npos);
  EXPECT_EQ(st.find("\"last_nack\":\""), std::string::npos) << st;
}

TEST_F(ControlPlaneTest, ConfigMapStyleSymlinkSwapIsOneReload) {
  // What a Kubernetes ConfigMap volume looks like: visible names are
  // symlinks through ..data, which is swapped atomically to a new directory.
  control.reset();
  const std::string cm = dir.path() + "/configmap";
  auto version = [&](const std::string& name, const std::string& models_yaml) {
    std::filesystem::create_directories(cm + "/" + name);
    std::ofstream(cm + "/" + name + "/models.yaml") << models_yaml;
    std::ofstream(cm + "/" + name + "/listeners.yaml") << listener("outbound", "sidecar");
    std::ofstream(cm + "/" + name + "/routes.yaml") << route();
  };
  version("..v1", models());
  std::filesystem::create_directory_symlink("..v1", cm + "/..data");
  for (const char* f : {"models.yaml", "listeners.yaml", "routes.yaml"})
    std::filesystem::create_symlink(std::string("..data/") + f, cm + "/" + f);
  config_dir = cm;
  startControlPlane("127.0.0.1:0");
  Proxy sidecar = startMeshProxy("sidecar-1", "sidecar", "outbound");
  ASSERT_EQ(status(sidecar, "swapped-in"), 404);

  std::string edited = models();
  edited.replace(edited.find("[chat-alias]"), 12, "[chat-alias, swapped-in]");
  version("..v2", edited);
  std::filesystem::create_directory_symlink("..v2", cm + "/..data_tmp");
  std::filesystem::rename(cm + "/..data_tmp", cm + "/..data");
  EXPECT_TRUE(eventually([&] { return status(sidecar, "swapped-in") == 200; }));
  EXPECT_EQ(scrape(control_admin, "infermesh_control_config_loads_total", "result=\"ok\""), 2);
}

TEST_F(ControlPlaneTest, InvalidEditIsRejectedWholeAndShownInStatus) {
  Proxy sidecar = startMeshProxy("sidecar-1", "sidecar", "outbound");
  ASSERT_EQ(status(sidecar, "chat-model"), 200);
  writeConfig("routes.yaml", route() + "---\napiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: broken}\n"
                                       "spec:\n  model: missing-model\n");
  std::string st;
  EXPECT_TRUE(eventually([&] {
    st = httpGetBody(control_admin, "/status");
    return st.find("missing-model") != std::string::npos;
  }));
  EXPECT_NE(st.find("routes.yaml:10: Route/broken: spec.model: model \\\"missing-model\\\" is not defined"),
            std::string::npos)
      << st;
  EXPECT_EQ(scrape(control_admin, "infermesh_control_config_loads_total", "result=\"error\""), 1);
  EXPECT_EQ(status(sidecar, "chat-model"), 200);
  EXPECT_EQ(scrape(sidecar.admin, "infermesh_config_version"), 1);  // nothing reached the proxy
}

TEST_F(ControlPlaneTest, ProxiesRideOutTheControlPlaneAndServeFromCache) {
  Proxy sidecar = startMeshProxy("sidecar-1", "sidecar", "outbound");
  ASSERT_EQ(status(sidecar, "chat-model"), 200);
  ASSERT_TRUE(eventually([&] { return std::filesystem::exists(dir.path() + "/sidecar-1.cache"); }));

  // The control plane goes away: traffic is unaffected.
  control.reset();
  EXPECT_TRUE(eventually([&] { return scrape(sidecar.admin, "infermesh_xds_connected") == 0; }));
  EXPECT_EQ(status(sidecar, "chat-model"), 200);

  // A proxy restarted meanwhile serves its cache and says so.
  sidecar.process.reset();
  Proxy restarted = startMeshProxy("sidecar-1", "sidecar", "outbound");
  EXPECT_EQ(status(restarted, "chat-model"), 200);
  EXPECT_EQ(scrape(restarted.admin, "infermesh_config_from_cache"), 1);
  EXPECT_NE(httpGetBody(restarted.admin, "/ready").find("from the cache"), std::string::npos);

  // The control plane comes back on the same address with an edit made
  // while it was down: the proxy reconnects and converges.
  std::string edited = models();
  edited.replace(edited.find("[chat-alias]"), 12, "[chat-alias, while-away]");
  writeConfig("models.yaml", edited);
  startControlPlane(xds);
  EXPECT_TRUE(eventually([&] { return status(restarted, "while-away") == 200; }, 15s));
  EXPECT_EQ(scrape(restarted.admin, "infermesh_xds_connected"), 1);
  EXPECT_EQ(scrape(restarted.admin, "infermesh_config_from_cache"), 0);
}

TEST_F(ControlPlaneTest, ReconnectToAControlPlaneWithNothingNewCountsAsConnected) {
  Proxy sidecar = startMeshProxy("sidecar-1", "sidecar", "outbound");
  ASSERT_EQ(status(sidecar, "chat-model"), 200);
  ASSERT_TRUE(eventually([&] { return scrape(sidecar.admin, "infermesh_xds_connected") == 1; }));
  control.reset();
  ASSERT_TRUE(eventually([&] { return scrape(sidecar.admin, "infermesh_xds_connected") == 0; }));
  // Same config: the control plane has nothing to send this proxy. The
  // bound is the documented 5 s backoff cap plus room for a busy machine.
  startControlPlane(xds);
  EXPECT_TRUE(eventually([&] { return scrape(sidecar.admin, "infermesh_xds_connected") == 1; }, 8s));
  auto connectedLines = [&] {
    std::ifstream in(dir.path() + "/sidecar-1.log");
    int n = 0;
    for (std::string line; std::getline(in, line);) n += line.find("xds: connected to") != std::string::npos;
    return n;
  };
  EXPECT_TRUE(eventually([&] { return connectedLines() == 2; })) << connectedLines();
  EXPECT_EQ(status(sidecar, "chat-model"), 200);
}

TEST_F(ControlPlaneTest, ProxyNacksWhatItCannotApplyAndKeepsServing) {
  Proxy sidecar = startMeshProxy("sidecar-1", "sidecar", "outbound");
  ASSERT_EQ(status(sidecar, "chat-model"), 200);
  // Valid for the control plane, but a running proxy cannot move a listener.
  std::string moved = listener("outbound", "sidecar");
  moved.replace(moved.find("127.0.0.1:0"), 11, "127.0.0.1:1");
  writeConfig("listeners.yaml", moved + "---\n" + listener("inbound", "node"));
  std::string st;
  EXPECT_TRUE(eventually([&] {
    st = httpGetBody(control_admin, "/status");
    return st.find("restart the proxy") != std::string::npos;
  })) << st;
  EXPECT_EQ(scrape(control_admin, "infermesh_control_xds_responses_total", "event=\"nacked\""), 1);
  EXPECT_EQ(status(sidecar, "chat-model"), 200);
  // Not resent in a loop.
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(scrape(control_admin, "infermesh_control_xds_responses_total", "event=\"nacked\""), 1);
}

// Runs infermeshctl; returns its exit status and output.
int ctl(const std::string& args, std::string& out) {
  out.clear();
  FILE* p = ::popen((binariesDir() + "/controlplane/infermeshctl " + args + " 2>&1").c_str(), "r");
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int st = ::pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST_F(ControlPlaneTest, InfermeshctlValidateStatusExplain) {
  std::string out;
  EXPECT_EQ(ctl("validate " + config_dir, out), 0) << out;
  EXPECT_NE(out.find("ok: 2 listeners, 2 models, 1 routes"), std::string::npos) << out;

  Proxy sidecar = startMeshProxy("sidecar-1", "sidecar", "outbound");
  EXPECT_EQ(ctl("status --control-plane 127.0.0.1:" + std::to_string(control_admin), out), 0) << out;
  EXPECT_NE(out.find("sidecar-1"), std::string::npos) << out;
  EXPECT_NE(out.find("role=sidecar"), std::string::npos) << out;

  EXPECT_EQ(ctl("explain --config-dir " + config_dir + " --model chat-alias --listener outbound", out), 0) << out;
  EXPECT_NE(out.find("(alias of chat-model)"), std::string::npos) << out;
  EXPECT_NE(out.find("result: route api -> model chat-model"), std::string::npos) << out;
  EXPECT_NE(out.find(fast_a.address()), std::string::npos) << out;
  EXPECT_EQ(ctl("explain --config-dir " + config_dir + " --model chat-model --path /other", out), 0) << out;
  EXPECT_NE(out.find("path does not start with /v1/"), std::string::npos) << out;
  EXPECT_NE(out.find("result: 404 no_route"), std::string::npos) << out;

  writeConfig("bad.yaml", "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: b}\nspec:\n  modle: x\n");
  EXPECT_EQ(ctl("validate " + config_dir, out), 1);
  EXPECT_NE(out.find("bad.yaml:5: Route/b: spec.modle: unknown field"), std::string::npos) << out;
}

TEST_F(ControlPlaneTest, ProxyWithoutCacheOrControlPlaneIsNotReady) {
  control.reset();
  auto p = Process::start({bin_dir + "/proxy/infermesh-proxy", "--control-plane", xds, "--node-id", "lonely",
                           "--admin", "127.0.0.1:0", "--workers", "1"},
                          dir.path() + "/lonely.log");
  const int admin_port = portOf(p->waitForLine("admin "));
  ASSERT_GT(admin_port, 0);
  auto ready = httpRequest(admin_port, "GET", "/ready");
  EXPECT_EQ(ready.status, 503);
  EXPECT_NE(ready.body.find("waiting for the first config"), std::string::npos);
}

}  // namespace
}  // namespace infermesh::testing
