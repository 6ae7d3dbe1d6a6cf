// infermesh-proxy: the data plane. See docs/proxy.md.
#include <spdlog/spdlog.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include <unistd.h>

#include "proxy/config/node_selector.h"
#include "proxy/server/server.h"

namespace {

void usage() {
  std::fprintf(stderr,
               "usage: infermesh-proxy --config FILE|DIR [--admin ADDR] [--workers N] [--log-level L]\n"
               "                       [--drain-timeout SECONDS]\n"
               "       infermesh-proxy --control-plane ADDR --node-id ID [--node-labels k=v,...]\n"
               "                       [--config-cache PATH] [--admin ADDR] ...\n"
               "  --config         YAML file or directory of Listener, Model and Route documents\n"
               "  --admin          admin listener (default 127.0.0.1:9901; port 0 picks one)\n"
               "  --workers        worker threads (default: one per core)\n"
               "  --log-level      trace|debug|info|warn|error (default info)\n"
               "  --drain-timeout  seconds SIGTERM waits for in-flight streams (default 30)\n"
               "  --control-plane  infermesh-control's xDS address: config comes from there\n"
               "  --node-id        this proxy's id for the control plane (default: hostname)\n"
               "  --node-labels    labels that select this node's listeners and routes (role=sidecar,...)\n"
               "  --config-cache   where the last accepted config is kept, and served from at start\n"
               "  --region, --zone where this proxy runs, for locality-aware balancing (default: the\n"
               "                   node labels topology.kubernetes.io/region and /zone)\n"
               "                   while the control plane cannot be reached\n");
}

}  // namespace

int main(int argc, char** argv) {
  infermesh::proxy::ServerOptions options;
  std::string log_level = "info";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    try {
      if (a == "--config") options.config_path = value();
      else if (a == "--admin") options.admin_address = value();
      else if (a == "--workers") options.workers = static_cast<unsigned>(std::stoul(value()));
      else if (a == "--log-level") log_level = value();
      else if (a == "--control-plane") options.control_plane = value();
      else if (a == "--node-id") options.node_id = value();
      else if (a == "--node-labels") options.node_labels = value();
      else if (a == "--config-cache") options.config_cache = value();
      else if (a == "--region") options.region = value();
      else if (a == "--zone") options.zone = value();
      else if (a == "--drain-timeout") options.drain_timeout = std::chrono::milliseconds(static_cast<long>(std::stod(value()) * 1000));
      else if (a == "-h" || a == "--help") {
        usage();
        return 0;
      } else {
        std::fprintf(stderr, "unknown argument %s\n", a.c_str());
        usage();
        return 2;
      }
    } catch (const std::exception&) {
      std::fprintf(stderr, "invalid value for %s\n", a.c_str());
      return 2;
    }
  }
  if (options.config_path.empty() == options.control_plane.empty()) {
    std::fprintf(stderr, "give exactly one of --config and --control-plane\n");
    usage();
    return 2;
  }
  if (!options.control_plane.empty() && options.node_id.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    options.node_id = host;
  }
  {
    infermesh::config::Labels labels;
    if (!infermesh::config::parseLabels(options.node_labels, labels)) {
      std::fprintf(stderr, "--node-labels must look like k=v,k2=v2\n");
      return 2;
    }
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("infermesh"));
  spdlog::set_level(spdlog::level::from_str(log_level));
  std::signal(SIGPIPE, SIG_IGN);
  return infermesh::proxy::Server(std::move(options)).run();
}
