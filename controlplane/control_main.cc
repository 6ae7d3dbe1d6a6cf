// infermesh-control: loads the YAML config directory, validates it with the
// proxy's own loader and compiler, and pushes per-node snapshots to every
// connected proxy over the aggregated discovery service. See docs/control-plane.md.
#include <array>
#include <functional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <grpcpp/grpcpp.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <mutex>

#include "controlplane/ads_service.h"
#include "controlplane/dir_watcher.h"
#include "controlplane/injector.h"
#include "controlplane/iso_time.h"
#include "controlplane/snapshot_cache.h"
#include "controlplane/webhook_server.h"
#include "proxy/common/json_string.h"
#include "proxy/config/compiler.h"
#include "proxy/config/yaml_loader.h"
#include "proxy/server/admin_http.h"

namespace {

using namespace infermesh;

struct Options {
  std::string config_dir;
  std::string xds_address = "127.0.0.1:18000";
  std::string admin_address = "127.0.0.1:19000";
  std::string log_level = "info";
  // The sidecar injector (all four, or none).
  std::string webhook_address;
  std::string webhook_cert;
  std::string webhook_key;
  std::string inject_config;
};

void usage() {
  std::fprintf(stderr,
               "usage: infermesh-control --config-dir DIR [--xds-address ADDR] [--admin-address ADDR] [--log-level L]\n"
               "                         [--webhook-address ADDR --webhook-cert F --webhook-key F --inject-config F]\n"
               "  --config-dir     directory of Listener, Model and Route YAML documents (watched)\n"
               "  --xds-address    gRPC ADS listener (default 127.0.0.1:18000; port 0 picks one)\n"
               "  --admin-address  /status /metrics /healthz /ready (default 127.0.0.1:19000)\n"
               "  --webhook-*      the sidecar injector: HTTPS listener (POST /inject), its certificate and key\n"
               "  --inject-config  what the injector adds to a pod (YAML; docs/kubernetes.md)\n");
}

// Loads and validates the directory; on success the cache gets a new
// version, on failure the last good config stays and the error is kept.
class ConfigLoader {
 public:
  ConfigLoader(std::string dir, controlplane::SnapshotCache& cache, prometheus::Registry& registry)
      : dir_(std::move(dir)), cache_(cache) {
    auto& loads = prometheus::BuildCounter()
                      .Name("infermesh_control_config_loads_total")
                      .Help("Config directory loads by result.")
                      .Register(registry);
    ok_ = &loads.Add({{"result", "ok"}});
    failed_ = &loads.Add({{"result", "error"}});
    version_gauge_ = &prometheus::BuildGauge()
                          .Name("infermesh_control_config_version")
                          .Help("Version of the config being served.")
                          .Register(registry)
                          .Add({});
  }

  bool load() {
    config::YamlLoader loader;
    loader.loadPath(dir_);
    config::ConfigErrors errors = loader.errors();
    const std::uint64_t version = cache_.version() + 1;
    if (errors.empty()) errors = config::compile(loader.resources(), version).errors;
    std::lock_guard lock(mu_);
    if (!errors.empty()) {
      last_error_ = config::joinErrors(errors);
      failed_->Increment();
      spdlog::error("config rejected, keeping version {}:\n{}", cache_.version(), last_error_);
      return false;
    }
    last_error_.clear();
    cache_.set(std::make_shared<const config::Resources>(std::move(loader.resources())), version, dir_);
    ok_->Increment();
    version_gauge_->Set(static_cast<double>(version));
    spdlog::info("config version {} loaded from {} ({} resources changed)", version, dir_,
                 cache_.lastLoad().changed_resources);
    return true;
  }

  std::string lastError() const {
    std::lock_guard lock(mu_);
    return last_error_;
  }

 private:
  std::string dir_;
  controlplane::SnapshotCache& cache_;
  mutable std::mutex mu_;
  std::string last_error_;
  prometheus::Counter* ok_;
  prometheus::Counter* failed_;
  prometheus::Gauge* version_gauge_;
};

// The load in force, for /status: {"version":12,"loaded_at":"…Z","source":DIR,
// "changed_resources":5}, or null before the first valid load.
std::string loadJson(const controlplane::ConfigLoad& load) {
  if (load.version == 0) return "null";
  std::string out = "{\"version\":" + std::to_string(load.version) + ",\"loaded_at\":\"" +
                    controlplane::isoTime(load.loaded_at) + "\",\"source\":";
  common::appendJsonString(out, load.source);
  return out + ",\"changed_resources\":" + std::to_string(load.changed_resources) + "}";
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      usage();
      return 0;
    }
    if (i + 1 >= argc) {
      usage();
      return 2;
    }
    std::string v = argv[++i];
    if (a == "--config-dir") opt.config_dir = v;
    else if (a == "--xds-address") opt.xds_address = v;
    else if (a == "--admin-address") opt.admin_address = v;
    else if (a == "--log-level") opt.log_level = v;
    else if (a == "--webhook-address") opt.webhook_address = v;
    else if (a == "--webhook-cert") opt.webhook_cert = v;
    else if (a == "--webhook-key") opt.webhook_key = v;
    else if (a == "--inject-config") opt.inject_config = v;
    else {
      usage();
      return 2;
    }
  }
  if (opt.config_dir.empty()) {
    usage();
    return 2;
  }
  const int webhook_flags = !opt.webhook_address.empty() + !opt.webhook_cert.empty() + !opt.webhook_key.empty() +
                            !opt.inject_config.empty();
  if (webhook_flags != 0 && webhook_flags != 4) {
    std::fprintf(stderr, "infermesh-control: the injector needs --webhook-address, --webhook-cert, --webhook-key "
                         "and --inject-config together\n");
    return 2;
  }
  controlplane::InjectorConfig inject;
  if (!opt.inject_config.empty()) {
    if (std::string error; !controlplane::loadInjectorConfig(opt.inject_config, inject, error)) {
      std::fprintf(stderr, "infermesh-control: %s\n", error.c_str());
      return 2;
    }
  }
  spdlog::set_default_logger(spdlog::stderr_color_mt("infermesh-control"));
  spdlog::set_level(spdlog::level::from_str(opt.log_level));
  std::signal(SIGPIPE, SIG_IGN);

  boost::asio::io_context io(1);
  boost::asio::signal_set signals(io, SIGTERM, SIGINT);
  auto registry = std::make_shared<prometheus::Registry>();
  controlplane::SnapshotCache cache;
  ConfigLoader loader(opt.config_dir, cache, *registry);
  // A bad config at start still starts the server: proxies keep serving
  // their cached config and status tells what is wrong.
  loader.load();

  controlplane::AdsService ads(cache, *registry);
  grpc::ServerBuilder builder;
  int xds_port = 0;
  builder.AddListeningPort(opt.xds_address, grpc::InsecureServerCredentials(), &xds_port);
  builder.RegisterService(&ads);
  // Keepalive: notice dead proxies; let proxies ping an idle stream.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || xds_port == 0) {
    spdlog::error("cannot listen on {}", opt.xds_address);
    return 1;
  }
  const std::string xds_bound = opt.xds_address.substr(0, opt.xds_address.rfind(':')) + ":" + std::to_string(xds_port);

  controlplane::DirWatcher watcher(opt.config_dir, std::chrono::milliseconds(25), [&] {
    if (loader.load()) ads.pushAll();
  });

  // Set once the webhook runs: copies its TLS counters into the registry.
  std::function<void()> webhook_stats;
  std::unique_ptr<proxy::AdminHttpServer> admin;
  try {
    admin = std::make_unique<proxy::AdminHttpServer>(io, opt.admin_address, [&](std::string_view path) {
      proxy::AdminResponse r;
      if (path == "/healthz") {
        r.body = "ok\n";
      } else if (path == "/ready") {
        if (cache.version() == 0) {
          r.status = 503;
          r.body = "not ready: no valid config loaded\n";
        } else {
          r.body = "ready: config version " + std::to_string(cache.version()) + "\n";
        }
      } else if (path == "/status") {
        r.content_type = "application/json";
        r.body = "{\"config_version\":" + std::to_string(cache.version()) + ",\"last_config_error\":";
        const std::string err = loader.lastError();
        if (err.empty()) r.body += "null";
        else common::appendJsonString(r.body, err);
        r.body += ",\"config\":" + loadJson(cache.lastLoad());
        r.body += ",\"proxies\":" + ads.streamsJson() + "}";
      } else if (path == "/metrics") {
        r.content_type = "text/plain; version=0.0.4; charset=utf-8";
        if (webhook_stats) webhook_stats();
        r.body = prometheus::TextSerializer().Serialize(registry->Collect());
      } else {
        r.status = 404;
        r.body = "endpoints: /status /metrics /healthz /ready\n";
      }
      return r;
    });
  } catch (const std::exception& e) {
    spdlog::error("cannot bind admin {}: {}", opt.admin_address, e.what());
    return 1;
  }
  admin->start();
  std::printf("xds %s\nadmin %s\n", xds_bound.c_str(), admin->boundAddress().c_str());

  std::unique_ptr<controlplane::WebhookServer> webhook;
  if (!opt.webhook_address.empty()) {
    auto& injections = prometheus::BuildCounter()
                           .Name("infermesh_control_injections_total")
                           .Help("Pod admission reviews answered by the sidecar injector, by result")
                           .Register(*registry);
    std::array<prometheus::Counter*, 3> by_outcome{};
    for (std::size_t i = 0; i < by_outcome.size(); ++i) {
      by_outcome[i] = &injections.Add({{"result", controlplane::kReviewOutcomeNames[i]}});
    }
    try {
      webhook = std::make_unique<controlplane::WebhookServer>(
          io, opt.webhook_address, opt.webhook_cert, opt.webhook_key,
          [&inject, by_outcome](std::string_view path, std::string_view body) {
            if (path != "/inject") return controlplane::WebhookResponse{404, R"({"error":"webhook paths: /inject"})"};
            controlplane::ReviewAnswer answer = controlplane::review(body, inject);
            by_outcome[static_cast<std::size_t>(answer.outcome)]->Increment();
            if (answer.outcome == controlplane::ReviewOutcome::Error) {
              spdlog::warn("inject: refused review: {}", answer.reason);
            } else {
              spdlog::info("inject: {}: {}", controlplane::kReviewOutcomeNames[static_cast<int>(answer.outcome)],
                           answer.reason);
            }
            return controlplane::WebhookResponse{answer.http_status, std::move(answer.body)};
          });
    } catch (const std::exception& e) {
      spdlog::error("cannot start the injector webhook on {}: {}", opt.webhook_address, e.what());
      return 1;
    }
    webhook->start();
    auto& tls_events = prometheus::BuildCounter()
                           .Name("infermesh_control_webhook_tls_total")
                           .Help("Injector webhook TLS events: failed handshakes, certificate reloads and failed reloads")
                           .Register(*registry);
    webhook_stats = [w = webhook.get(), handshake = &tls_events.Add({{"event", "handshake_failed"}}),
                     reload = &tls_events.Add({{"event", "cert_reloaded"}}),
                     reload_failed = &tls_events.Add({{"event", "cert_reload_failed"}})] {
      const auto sync = [](prometheus::Counter* c, std::uint64_t total) {
        c->Increment(static_cast<double>(total) - c->Value());
      };
      sync(handshake, w->handshakeFailures());
      sync(reload, w->certReloads());
      sync(reload_failed, w->certReloadFailures());
    };
    std::printf("webhook %s\n", webhook->boundAddress().c_str());
    spdlog::info("infermesh-control: injector webhook https://{}/inject", webhook->boundAddress());
  }
  std::fflush(stdout);
  spdlog::info("infermesh-control: xds {} admin {}", xds_bound, admin->boundAddress());

  signals.async_wait([&](auto, int) {
    admin->close();
    if (webhook) webhook->close();
    io.stop();
  });
  io.run();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  spdlog::info("stopped");
  return 0;
}
