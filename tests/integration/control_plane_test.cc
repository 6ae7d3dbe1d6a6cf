// infermesh-control with two real proxies and mock model servers: config
// edits reach traffic, bad edits never do, and proxies ride out the control
// plane going away.
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

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

  Proxy startMeshProxy(const std::string& id, const std::string& role, const std::string& listener_name,
                       const std::string& more_labels = "") {
    Proxy p;
    p.process = Process::start({bin_dir + "/proxy/infermesh-proxy", "--control-plane", xds, "--node-id", id,
                                "--node-labels", "role=" + role + more_labels, "--config-cache", dir.path() + "/" + id + ".cache",
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

// Runs infermeshctl; returns its exit status and output.
int ctl(const std::string& args, std::string& out) {
  out.clear();
  FILE* p = ::popen((binariesDir() + "/controlplane/infermeshctl " + args + " 2>&1").c_str(), "r");
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int st = ::pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// `infermeshctl status` read back as a table: each proxy's row as
// header -> cell (cells are cut at the header's column starts, since
// "NOT SENT" and "3s ago" hold spaces).
struct StatusTable {
  std::string text;
  std::string control_plane;  // the CONTROL PLANE line
  std::map<std::string, std::map<std::string, std::string>> rows;  // by proxy id
  std::string cell(const std::string& id, const std::string& column) const {
    auto r = rows.find(id);
    if (r == rows.end()) return "(no row)";
    auto c = r->second.find(column);
    return c == r->second.end() ? "(no column)" : c->second;
  }
  // Every type column of the row says `state`.
  bool all(const std::string& id, const std::string& state) const {
    for (const char* c : {"LISTENERS", "MODELS", "ROUTES", "TENANTS", "POLICIES"})
      if (cell(id, c) != state) return false;
    return true;
  }
};

StatusTable ctlStatus(int admin_port) {
  StatusTable t;
  ctl("status --control-plane 127.0.0.1:" + std::to_string(admin_port), t.text);
  std::istringstream in(t.text);
  std::vector<std::pair<std::string, std::size_t>> columns;
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("CONTROL PLANE")) {
      t.control_plane = line;
    } else if (line.starts_with("PROXY")) {
      for (const char* c : {"PROXY", "LISTENERS", "MODELS", "ROUTES", "TENANTS", "POLICIES", "VERSION", "LAST ACK",
                            "STREAM", "LABELS"})
        if (auto at = line.find(c); at != std::string::npos) columns.emplace_back(c, at);
    } else if (!columns.empty() && !line.empty() && line[0] != ' ' && line[0] != '(') {
      std::map<std::string, std::string> row;
      for (std::size_t i = 0; i < columns.size(); ++i) {
        const std::size_t from = columns[i].second;
        const std::size_t to = i + 1 < columns.size() ? columns[i + 1].second : line.size();
        std::string cell = from < line.size() ? line.substr(from, to - from) : "";
        while (!cell.empty() && cell.back() == ' ') cell.pop_back();
        row[columns[i].first] = cell;
      }
      t.rows[row["PROXY"]] = row;
    }
  }
  return t;
}

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

// A proxy fed by the control plane names the YAML file and line each
// resource came from, and follows a document that moved.
TEST_F(ControlPlaneTest, ConfigDumpNamesTheYamlFileAndLine) {
  Proxy sidecar = startMeshProxy("sidecar-1", "sidecar", "outbound");
  const std::string models_file = "\"file\":\"" + config_dir + "/models.yaml\"";
  std::string dump = httpGetBody(sidecar.admin, "/config_dump");
  EXPECT_NE(dump.find("{\"name\":\"chat-model\"," + models_file + ",\"line\":1,"), std::string::npos) << dump;
  EXPECT_NE(dump.find("{\"name\":\"slow-model\"," + models_file + ",\"line\":6,"), std::string::npos) << dump;
  EXPECT_NE(dump.find("{\"name\":\"api\",\"file\":\"" + config_dir + "/routes.yaml\",\"line\":1,"),
            std::string::npos)
      << dump;
  // Two comment lines above every document: the lines follow.
  writeConfig("models.yaml", "# chat models\n# owned by the platform team\n" + models());
  EXPECT_TRUE(eventually([&] {
    dump = httpGetBody(sidecar.admin, "/config_dump");
    return dump.find("{\"name\":\"slow-model\"," + models_file + ",\"line\":8,") != std::string::npos;
  })) << dump;
  EXPECT_NE(dump.find("{\"name\":\"chat-model\"," + models_file + ",\"line\":3,"), std::string::npos) << dump;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), {}};
}

// Models written once under a Mesh: the sidecar reaches the engines through
// their node's proxy, which calls them directly; the client sees one
// x-infermesh-model and the hop in x-infermesh-hops.
TEST_F(ControlPlaneTest, AMeshDerivesTheSidecarAndNodeProxyViews) {
  control.reset();  // restarted below on the mesh config, so no proxy sees the one before
  const std::string node_address = "127.0.0.1:" + std::to_string(freePort());
  writeConfig("mesh.yaml",
              "apiVersion: infermesh.io/v1\nkind: Mesh\nmetadata: {name: mesh}\nspec:\n"
              "  nodeProxySelector: {role: node}\n  nodeLabel: node\n  listener: inbound\n"
              "  nodes: [{name: gpu-1, address: '" + node_address + "'}]\n");
  writeConfig("listeners.yaml",
              listener("outbound", "sidecar") + "---\napiVersion: infermesh.io/v1\nkind: Listener\n"
              "metadata: {name: inbound}\nspec: {address: '" + node_address + "', protocol: auto, "
              "filters: [{name: router}], nodeSelector: {role: node}}\n");
  writeConfig("routes.yaml", "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: api}\n"
                             "spec: {match: {listeners: [outbound], pathPrefix: /v1/}}\n");
  writeConfig("models.yaml",
              "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: mesh-chat}\n"
              "spec: {aliases: [chat-alias], upstreamModel: chat-model, endpoints: [{address: '" +
                  fast_a.address() + "', node: gpu-1}]}\n");
  startControlPlane("127.0.0.1:0");
  Proxy node = startMeshProxy("node-1", "node", "inbound", ",node=gpu-1");
  Proxy sidecar = startMeshProxy("sidecar-1", "sidecar", "outbound");
  HttpResponse r;
  EXPECT_TRUE(eventually([&] {
    r = httpRequest(sidecar.port, "POST", "/v1/chat/completions", chatBody("chat-alias", false));
    return r.status == 200;
  })) << r.status << " " << r.body << "\nnode log:\n" << readFile(dir.path() + "/node-1.log");
  EXPECT_EQ(r.headers["x-mock-server"], "fast-a");
  EXPECT_EQ(r.headers["x-infermesh-model"], "mesh-chat");
  EXPECT_EQ(r.headers["x-infermesh-hops"], "mesh-chat");
  // The engine was asked for its own name, by the node proxy.
  EXPECT_NE(r.body.find("\"model\":\"chat-model\""), std::string::npos) << r.body;
  // The sidecar's endpoint is the node proxy; the node's is the engine.
  const std::string sidecar_dump = httpGetBody(sidecar.admin, "/config_dump");
  EXPECT_NE(sidecar_dump.find("\"address\":\"" + node_address + "\""), std::string::npos) << sidecar_dump;
  EXPECT_EQ(sidecar_dump.find(fast_a.address()), std::string::npos) << sidecar_dump;
  const std::string node_dump = httpGetBody(node.admin, "/config_dump");
  EXPECT_NE(node_dump.find("\"address\":\"" + fast_a.address() + "\""), std::string::npos) << node_dump;
  EXPECT_NE(node_dump.find("\"name\":\"mesh-inbound\""), std::string::npos) << node_dump;
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
  // infermeshctl names the rejected load under the version still in force.
  StatusTable t;
  EXPECT_TRUE(eventually([&] {
    t = ctlStatus(control_admin);
    return t.all("sidecar-1", "SYNCED");
  })) << t.text;
  EXPECT_EQ(t.control_plane.find("CONTROL PLANE  version 1 ("), 0u) << t.text;
  EXPECT_NE(t.text.find("the last load was rejected, the version above stays in force:\n  "), std::string::npos)
      << t.text;
  EXPECT_NE(t.text.find("Route/broken: spec.model: model \"missing-model\" is not defined"), std::string::npos)
      << t.text;
  EXPECT_EQ(t.cell("sidecar-1", "VERSION"), "1") << t.text;
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
  // It said what it holds when it connected: in sync, with nothing sent.
  StatusTable t;
  EXPECT_TRUE(eventually([&] {
    t = ctlStatus(control_admin);
    return t.all("sidecar-1", "SYNCED") && t.cell("sidecar-1", "VERSION") == "1";
  })) << t.text;
  EXPECT_EQ(scrape(control_admin, "infermesh_control_xds_responses_total", "event=\"sent\""), 0);
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

TEST_F(ControlPlaneTest, StatusShowsEveryProxySyncedAtTheControlPlanesVersion) {
  Proxy sidecar = startMeshProxy("sidecar-1", "sidecar", "outbound");
  Proxy node = startMeshProxy("node-a", "node", "inbound");
  StatusTable t;
  EXPECT_TRUE(eventually([&] {
    t = ctlStatus(control_admin);
    return t.all("sidecar-1", "SYNCED") && t.all("node-a", "SYNCED");
  })) << t.text;
  // 2 models, 2 listeners and 1 route, all new at the first load.
  EXPECT_EQ(t.control_plane.find("CONTROL PLANE  version 1 (loaded 20"), 0u) << t.text;
  EXPECT_NE(t.control_plane.find("Z from " + config_dir + ", 5 resources changed)"), std::string::npos) << t.text;
  for (const char* id : {"sidecar-1", "node-a"}) {
    EXPECT_EQ(t.cell(id, "VERSION"), "1") << t.text;
    EXPECT_TRUE(t.cell(id, "LAST ACK").ends_with("s ago")) << t.text;
    EXPECT_EQ(t.cell(id, "STREAM"), "sotw") << t.text;
  }
  EXPECT_EQ(t.cell("node-a", "LABELS"), "role=node");
  EXPECT_EQ(t.text.find("NACKED"), std::string::npos) << t.text;

  // The JSON says the same, in the same numbers for both proxies.
  const std::string st = httpGetBody(control_admin, "/status");
  EXPECT_NE(st.find("\"config\":{\"version\":1,"), std::string::npos) << st;
  EXPECT_NE(st.find("\"changed_resources\":5"), std::string::npos) << st;
  std::size_t synced = 0;
  for (auto at = st.find("\"config_version\":1,\"synced\":true"); at != std::string::npos;
       at = st.find("\"config_version\":1,\"synced\":true", at + 1))
    ++synced;
  EXPECT_EQ(synced, 2u) << st;
  EXPECT_NE(st.find("\"Tenant\":{\"state\":\"SYNCED\""), std::string::npos) << st;
}

TEST_F(ControlPlaneTest, StatusShowsTheNackForThatProxyAndType) {
  Proxy sidecar = startMeshProxy("sidecar-1", "sidecar", "outbound");
  Proxy node = startMeshProxy("node-a", "node", "inbound");
  StatusTable t;
  ASSERT_TRUE(eventually([&] {
    t = ctlStatus(control_admin);
    return t.all("sidecar-1", "SYNCED") && t.all("node-a", "SYNCED");
  })) << t.text;
  // Valid for the control plane; the sidecar cannot move a running listener.
  // The node's listener is untouched, so the node is in sync with the edit.
  std::string moved = listener("outbound", "sidecar");
  moved.replace(moved.find("127.0.0.1:0"), 11, "127.0.0.1:1");
  writeConfig("listeners.yaml", moved + "---\n" + listener("inbound", "node"));
  EXPECT_TRUE(eventually([&] {
    t = ctlStatus(control_admin);
    return t.cell("sidecar-1", "LISTENERS") == "NACKED" && t.cell("node-a", "VERSION") == "2";
  })) << t.text;
  EXPECT_NE(t.control_plane.find("version 2 ("), std::string::npos) << t.text;
  EXPECT_NE(t.control_plane.find(", 1 resource changed)"), std::string::npos) << t.text;
  for (const char* c : {"MODELS", "ROUTES", "TENANTS", "POLICIES"}) EXPECT_EQ(t.cell("sidecar-1", c), "SYNCED") << t.text;
  EXPECT_EQ(t.cell("sidecar-1", "VERSION"), "1") << t.text;  // its listeners are still version 1's
  EXPECT_TRUE(t.all("node-a", "SYNCED")) << t.text;
  // The error, right under the sidecar's row, and the only one.
  const auto row = t.text.find("\nsidecar-1 ");
  const auto nack = t.text.find("\n  NACKED listeners (version 2): ");
  ASSERT_NE(row, std::string::npos) << t.text;
  EXPECT_EQ(t.text.find('\n', row + 1), nack) << t.text;
  EXPECT_NE(t.text.find("restart the proxy", nack), std::string::npos) << t.text;
  EXPECT_EQ(t.text.find("\n  NACKED", nack + 1), std::string::npos) << t.text;

  const std::string st = httpGetBody(control_admin, "/status");
  EXPECT_NE(st.find("\"Listener\":{\"state\":\"NACKED\""), std::string::npos) << st;
  EXPECT_NE(st.find("\"nacked_config_version\":2"), std::string::npos) << st;

  // Undoing the edit: the sidecar already holds that content, and is in
  // sync with the new version like the node.
  writeConfig("listeners.yaml", listener("outbound", "sidecar") + "---\n" + listener("inbound", "node"));
  EXPECT_TRUE(eventually([&] {
    t = ctlStatus(control_admin);
    return t.all("sidecar-1", "SYNCED") && t.cell("sidecar-1", "VERSION") == "3" && t.cell("node-a", "VERSION") == "3";
  })) << t.text;
}

TEST_F(ControlPlaneTest, StatusShowsTheNewVersionInEveryRowOnceAcked) {
  Proxy sidecar = startMeshProxy("sidecar-1", "sidecar", "outbound");
  Proxy node = startMeshProxy("node-a", "node", "inbound");
  StatusTable t;
  ASSERT_TRUE(eventually([&] {
    t = ctlStatus(control_admin);
    return t.cell("sidecar-1", "VERSION") == "1" && t.cell("node-a", "VERSION") == "1";
  })) << t.text;

  std::string edited = models();
  edited.replace(edited.find("[chat-alias]"), 12, "[chat-alias, brand-new]");
  writeConfig("models.yaml", edited);
  EXPECT_TRUE(eventually([&] {
    t = ctlStatus(control_admin);
    return t.all("sidecar-1", "SYNCED") && t.all("node-a", "SYNCED") && t.cell("sidecar-1", "VERSION") == "2" &&
           t.cell("node-a", "VERSION") == "2";
  })) << t.text;
  EXPECT_NE(t.control_plane.find("version 2 ("), std::string::npos) << t.text;
  EXPECT_NE(t.control_plane.find(", 1 resource changed)"), std::string::npos) << t.text;
  EXPECT_EQ(status(sidecar, "brand-new"), 200);  // what status says is what the proxy serves

  // Another edit, to routes only: every row moves on again.
  writeConfig("routes.yaml", route("slow-model"));
  EXPECT_TRUE(eventually([&] {
    t = ctlStatus(control_admin);
    return t.all("sidecar-1", "SYNCED") && t.all("node-a", "SYNCED") && t.cell("sidecar-1", "VERSION") == "3" &&
           t.cell("node-a", "VERSION") == "3";
  })) << t.text;
  EXPECT_TRUE(t.cell("sidecar-1", "LAST ACK").ends_with("s ago")) << t.text;
}

TEST_F(ControlPlaneTest, StatusShowsNothingSentUntilAValidConfigLoads) {
  control.reset();
  writeConfig("routes.yaml", route() + doc("Route", "broken", "{model: missing-model}"));
  startControlPlane("127.0.0.1:0");
  auto p = Process::start({bin_dir + "/proxy/infermesh-proxy", "--control-plane", xds, "--node-id", "waiting",
                           "--node-labels", "role=sidecar", "--admin", "127.0.0.1:0", "--workers", "1"},
                          dir.path() + "/waiting.log");
  StatusTable t;
  EXPECT_TRUE(eventually([&] {
    t = ctlStatus(control_admin);
    return t.all("waiting", "NOT SENT");
  })) << t.text;
  EXPECT_EQ(t.control_plane, "CONTROL PLANE  no valid config loaded") << t.text;
  EXPECT_NE(t.text.find("the config directory is rejected:\n  "), std::string::npos) << t.text;
  EXPECT_EQ(t.cell("waiting", "VERSION"), "-") << t.text;
  EXPECT_EQ(t.cell("waiting", "LAST ACK"), "never") << t.text;

  writeConfig("routes.yaml", route());
  EXPECT_TRUE(eventually([&] {
    t = ctlStatus(control_admin);
    return t.all("waiting", "SYNCED") && t.cell("waiting", "VERSION") == "1";
  })) << t.text;
  EXPECT_EQ(t.text.find("rejected"), std::string::npos) << t.text;
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
