#pragma once

#include <chrono>
#include <memory>
#include <string>

namespace infermesh::proxy {

struct ServerOptions {
  std::string config_path;
  std::string admin_address = "127.0.0.1:9901";
  unsigned workers = 0;  // 0: one per core
  std::chrono::milliseconds drain_timeout{30000};
  // Control-plane mode (instead of config_path): ADS server address, this
  // proxy's identity, and where the last accepted config is kept.
  std::string control_plane;
  std::string node_id;
  std::string node_labels;  // "k=v,k2=v2"
  std::string config_cache;
  // Where this proxy runs, for locality-aware load balancing (default: the
  // node labels topology.kubernetes.io/region and .../zone).
  std::string region;
  std::string zone;
};

// The proxy process: workers, listeners, admin endpoint, signals, reload.
class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();
  // Runs until SIGTERM/SIGINT has drained. Returns the exit code.
  int run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace infermesh::proxy
