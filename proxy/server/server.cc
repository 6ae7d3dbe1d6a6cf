#include "proxy/server/server.h"
#include "proxy/stats/filter_metrics.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <prometheus/text_serializer.h>
#include <spdlog/async.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <future>
#include <map>
#include <thread>

#include "proxy/config/compiler.h"
#include "proxy/config/node_selector.h"
#include "proxy/xds_client/ads_client.h"
#include "proxy/server/admin_http.h"
#include "proxy/server/http1_connection.h"
#include "proxy/server/http2_connection.h"
#include "proxy/server/http_util.h"
#include "proxy/server/worker.h"
#include "proxy/stats/metrics_collector.h"
#include "proxy/upstream/health_checker.h"
#include "proxy/tls/client_tls.h"
#include "proxy/tls/server_tls.h"

namespace infermesh::proxy {

namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

namespace {

// Tells a parent process (tests, scripts) where things are bound. Also logged.
void announceText(const std::string& what, const std::string& address) {
  std::printf("%s %s\n", what.c_str(), address.c_str());
  std::fflush(stdout);
  spdlog::info("{} {}", what, address);
}

void announce(const std::string& what, const tcp::endpoint& ep) {
  announceText(what, ep.address().to_string() + ":" + std::to_string(ep.port()));
}

// Listener identity that a reload may not change (sockets are bound at start).
std::string listenerKey(const config::Snapshot& s) {
  std::string k;
  for (const auto& l : s.listeners) k += l.name + "@" + l.ip + ":" + std::to_string(l.port) + ";";
  return k;
}

}  // namespace

struct Server::Impl {
  ServerOptions options;
  asio::io_context io{1};
  std::vector<std::unique_ptr<Worker>> workers;
  // acceptors[worker][listener], each owned by (and used on) its worker.
  std::vector<std::vector<std::unique_ptr<tcp::acceptor>>> acceptors;
  std::vector<tcp::endpoint> bound;  // by listener index
  std::unique_ptr<AdminHttpServer> admin;
  const char* waiting_reason = "no config yet";
  std::string source_note;  // e.g. " (from the control plane's cache)"
  std::shared_ptr<const config::Snapshot> current;
  std::map<std::string, std::shared_ptr<spdlog::logger>> access_logs;  // by path
  // Installed before anything is announced, so a signal sent as soon as a
  // parent sees "listener ..." is queued, not fatal.
  asio::signal_set signals{io, SIGHUP, SIGTERM, SIGINT};
  stats::ProcessStats process;
  std::unique_ptr<stats::MetricsCollector> collector;
  std::string last_error;
  std::unique_ptr<xds_client::AdsClient> ads;
  std::unique_ptr<upstream::HealthChecker> health_checker;
  // TLS contexts per listener (listeners are fixed for the process's life).
  std::unique_ptr<tls::ListenerTls> listener_tls;
  tls::UpstreamTlsRegistry upstream_tls;

  // Loads what a snapshot needs before anyone sees it: the listeners'
  // certificates, the models' upstream TLS contexts, and what filters
  // attach (JWKS keys, audit writers).
  bool prepare(const config::Snapshot& snap, std::string& error) {
    return upstream_tls.apply(snap, error) && (!listener_tls || listener_tls->apply(snap, error)) &&
           filter::FilterRegistry::instance().prepare(snap, error);
  }
  std::atomic<std::uint64_t> next_version{1};
  bool serving = false;
  bool draining = false;
  int exit_code = 0;

  explicit Impl(ServerOptions o) : options(std::move(o)) {}

  std::vector<std::shared_ptr<spdlog::logger>> accessLogsFor(const config::Snapshot& s) {
    std::vector<std::shared_ptr<spdlog::logger>> logs;
    for (const auto& l : s.listeners) {
      if (l.access_log.empty()) {
        logs.emplace_back();
        continue;
      }
      auto& logger = access_logs[l.access_log];
      if (!logger) {
        if (!spdlog::thread_pool()) spdlog::init_thread_pool(8192, 1);
        spdlog::sink_ptr sink;
        if (l.access_log == "stdout") sink = std::make_shared<spdlog::sinks::stdout_sink_mt>();
        else sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(l.access_log);
        // Async: the worker only queues the line; a logging thread writes it.
        logger = std::make_shared<spdlog::async_logger>("access:" + l.access_log, sink, spdlog::thread_pool(),
                                                        spdlog::async_overflow_policy::overrun_oldest);
        logger->set_pattern("%v");
        logger->flush_on(spdlog::level::info);
      }
      logs.push_back(logger);
    }
    return logs;
  }

  // RCU-style publish: each worker swaps its pointer on its own thread;
  // streams keep the snapshot they started with.
  void publish(std::shared_ptr<const config::Snapshot> snap) {
    auto logs = accessLogsFor(*snap);
    current = snap;
    process.config_version = snap->version;
    if (health_checker) health_checker->update(snap);
    for (auto& w : workers)
      w->post([w = w.get(), snap, logs] {
        w->setSnapshot(snap);
        w->setAccessLogs(logs);
      });
  }

  void reload() {
    if (!options.control_plane.empty() || !current) {
      spdlog::info("SIGHUP ignored: config comes from the control plane");
      return;
    }
    const std::uint64_t version = next_version++;
    auto result = config::loadAndCompile(options.config_path, version, nodeLabels());
    if (result.snapshot && listenerKey(*result.snapshot) != listenerKey(*current)) {
      result.errors.push_back(config::ConfigError{options.config_path, "", "", 0,
                                                  "listeners (names or addresses) changed; restart the proxy to apply"});
      result.snapshot.reset();
    }
    if (result.snapshot) {
      if (std::string error; !prepare(*result.snapshot, error)) {
        result.errors.push_back(config::ConfigError{options.config_path, "", "", 0, error});
        result.snapshot.reset();
      }
    }
    if (!result.snapshot) {
      ++process.config_reloads_failed;
      last_error = config::joinErrors(result.errors);
      spdlog::error("config reload rejected, keeping version {}:\n{}", current->version, last_error);
      return;
    }
    ++process.config_reloads_ok;
    last_error.clear();
    publish(result.snapshot);
    spdlog::info("config version {} applied", version);
  }

  void bindListeners() {
    acceptors.resize(workers.size());
    bound.resize(current->listeners.size());
    for (const auto& l : current->listeners) {
      tcp::endpoint ep(asio::ip::make_address(l.ip), l.port);
      for (std::size_t w = 0; w < workers.size(); ++w) {
        // SO_REUSEPORT: each worker has its own accept queue on the same
        // port, and the kernel spreads connections across them.
        auto a = std::make_unique<tcp::acceptor>(workers[w]->io());
        a->open(ep.protocol());
        a->set_option(tcp::acceptor::reuse_address(true));
        int one = 1;
        ::setsockopt(a->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        a->bind(w == 0 ? ep : bound[l.index]);
        a->listen(asio::socket_base::max_listen_connections);
        if (w == 0) bound[l.index] = a->local_endpoint();  // port 0 -> the port picked
        acceptors[w].push_back(std::move(a));
      }
      announce("listener " + l.name, bound[l.index]);
    }
  }

  static awaitable<void> acceptLoop(Worker& worker, tcp::acceptor& acceptor, std::uint32_t listener,
                                    const tls::ListenerTls& listener_tls) {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(kTuple);
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        spdlog::warn("accept failed: {}", ec.message());
        continue;  // e.g. EMFILE; keep serving the connections we have
      }
      if (auto contexts = listener_tls.contexts(listener)) {
        asio::co_spawn(worker.io(), tlsHandshake(worker, std::move(socket), listener, std::move(contexts)),
                       asio::detached);
        continue;
      }
      // The protocol is read from the snapshot in force, per connection.
      switch (worker.snapshot()->listeners[listener].protocol) {
        case config::ListenerProtocol::Http1:
          serveHttp1(worker, Transport(std::move(socket)), listener);
          break;
        case config::ListenerProtocol::Http2:
          serveHttp2(worker, Transport(std::move(socket)), listener);
          break;
        case config::ListenerProtocol::Auto:
          asio::co_spawn(worker.io(), detectProtocol(worker, std::move(socket), listener), asio::detached);
          break;
      }
    }
  }

  static void serveHttp1(Worker& worker, Transport transport, std::uint32_t listener, std::string identity = {}) {
    auto c = std::make_unique<Http1Connection>(worker, std::move(transport), listener);
    c->setPeerIdentity(std::move(identity));
    asio::co_spawn(worker.io(), Http1Connection::serve(std::move(c)), asio::detached);
  }
  static void serveHttp2(Worker& worker, Transport transport, std::uint32_t listener, std::string identity = {}) {
    auto c = std::make_unique<Http2Connection>(worker, std::move(transport), listener);
    c->setPeerIdentity(std::move(identity));
    asio::co_spawn(worker.io(), Http2Connection::serve(std::move(c)), asio::detached);
  }

  // TLS: the handshake (bounded by the header timeout), then the codec ALPN
  // chose. A client refused at the handshake (no, expired, foreign or
  // disallowed certificate under mTLS) is counted by cause.
  static awaitable<void> tlsHandshake(Worker& worker, tcp::socket socket, std::uint32_t listener,
                                      std::shared_ptr<const tls::ServerContexts> contexts) {
    boost::system::error_code ec;
    socket.set_option(tcp::no_delay(true), ec);
    SSL* ssl = SSL_new(contexts->defaultContext());
    auto stream = std::make_unique<Transport::TlsStream>(std::move(socket), ssl);
    const auto limit = worker.snapshot()->listeners[listener].limits.header_timeout;
    asio::steady_timer timer(worker.io());
    timer.expires_after(limit);
    using namespace asio::experimental::awaitable_operators;
    auto r = co_await (stream->async_handshake(asio::ssl::stream_base::server, kTuple) || timer.async_wait(kTuple));
    auto& counts = worker.stats().tls_handshakes;
    if (r.index() == 1 || std::get<0>(std::get<0>(r))) {
      const auto err = r.index() == 0 ? std::get<0>(std::get<0>(r)) : boost::system::error_code();
      const auto why = tls::classifyFailure(ssl, err.category() == asio::error::get_ssl_category()
                                                     ? static_cast<unsigned long>(err.value()) : 0);
      ++counts[static_cast<std::size_t>(why)];
      spdlog::debug("tls handshake from {} failed: {} ({})", peerOf(stream->next_layer()),
                    tls::kHandshakeResultNames[static_cast<int>(why)], err.message());
      stream->next_layer().close(ec);
      co_return;
    }
    ++counts[static_cast<std::size_t>(tls::HandshakeResult::Ok)];
    const std::string alpn = tls::negotiatedProtocol(ssl);
    std::string identity = tls::peerSpiffeId(ssl);
    const auto protocol = worker.snapshot()->listeners[listener].protocol;
    if (protocol == config::ListenerProtocol::Http2 || (protocol == config::ListenerProtocol::Auto && alpn == "h2"))
      serveHttp2(worker, Transport(std::move(stream)), listener, std::move(identity));
    else
      serveHttp1(worker, Transport(std::move(stream)), listener, std::move(identity));
  }

  static std::string peerOf(tcp::socket& s) {
    boost::system::error_code ec;
    auto ep = s.remote_endpoint(ec);
    return ec ? std::string("?") : ep.address().to_string();
  }

  // `protocol: auto`: a connection that opens with the HTTP/2 client preface
  // speaks HTTP/2 (prior knowledge), anything else HTTP/1.1. The bytes are
  // only peeked at, so the chosen codec reads them again.
  static awaitable<void> detectProtocol(Worker& worker, tcp::socket socket, std::uint32_t listener) {
    static constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const auto limit = worker.snapshot()->listeners[listener].limits.header_timeout;
    const auto deadline = std::chrono::steady_clock::now() + limit;
    asio::steady_timer timer(worker.io());
    for (;;) {
      using namespace asio::experimental::awaitable_operators;
      timer.expires_at(deadline);
      auto r = co_await (socket.async_wait(tcp::socket::wait_read, kTuple) || timer.async_wait(kTuple));
      if (r.index() == 1 || std::get<0>(std::get<0>(r))) co_return;  // silent or gone: close
      char buf[kPreface.size()];
      const ssize_t n = ::recv(socket.native_handle(), buf, sizeof buf, MSG_PEEK);
      if (n <= 0) co_return;
      const auto got = static_cast<std::size_t>(n);
      if (std::string_view(buf, got) != kPreface.substr(0, got)) {
        serveHttp1(worker, Transport(std::move(socket)), listener);
        co_return;
      }
      if (got == kPreface.size()) {
        serveHttp2(worker, Transport(std::move(socket)), listener);
        co_return;
      }
      // Part of the preface so far: look again shortly.
      timer.expires_after(std::chrono::milliseconds(2));
      co_await timer.async_wait(kTuple);
    }
  }

  std::vector<stats::WorkerStats> gatherStats() {
    std::vector<std::future<stats::WorkerStats>> futures;
    for (auto& w : workers) {
      auto p = std::make_shared<std::promise<stats::WorkerStats>>();
      futures.push_back(p->get_future());
      w->post([w = w.get(), p] {
        stats::WorkerStats copy = w->stats();
        copy.filter_values = stats::threadFilterValues();  // this worker's, on its thread
        p->set_value(std::move(copy));
      });
    }
    std::vector<stats::WorkerStats> out;
    for (auto& f : futures)
      if (f.wait_for(std::chrono::seconds(2)) == std::future_status::ready) out.push_back(f.get());
    return out;
  }

  std::string listenersJson() const {
    if (!serving) return "{}";
    std::string out = "{";
    for (const auto& l : current->listeners) {
      if (out.size() > 1) out += ',';
      appendJsonString(out, l.name);
      out += ':';
      appendJsonString(out, bound[l.index].address().to_string() + ":" + std::to_string(bound[l.index].port()));
    }
    return out + "}";
  }

  AdminResponse adminResponse(std::string_view path) {
    AdminResponse res;
    if (path == "/healthz") {
      res.body = "ok\n";
    } else if (path == "/ready") {
      if (draining) {
        res.status = 503;
        res.body = "draining\n";
      } else if (!current) {
        res.status = 503;
        res.body = "not ready: " + std::string(waiting_reason) + "\n";
      } else {
        res.body = "ready: config version " + std::to_string(current->version) + source_note + "\n";
      }
    } else if (path == "/metrics") {
      if (ads) process.xds_connected = ads->connected() ? 1 : 0;
      res.content_type = "text/plain; version=0.0.4; charset=utf-8";
      res.body = prometheus::TextSerializer().Serialize(collector->Collect());
    } else if (path == "/config_dump" && current) {
      res.content_type = "application/json";
      std::string body = "{\"version\":" + std::to_string(current->version) + ",\"hash\":";
      appendJsonString(body, current->hash);
      body += ",\"last_reload_error\":";
      appendJsonString(body, last_error);
      body += ",\"config\":" + current->dump_json + "}";
      res.body = std::move(body);
    } else if (path == "/listeners" && current) {
      res.content_type = "application/json";
      res.body = listenersJson();
    } else {
      res.status = 404;
      res.body = "endpoints: /ready /healthz /metrics /config_dump /listeners\n";
    }
    return res;
  }

  awaitable<void> drainAndStop() {
    draining = true;
    spdlog::info("draining: no new connections; waiting up to {} ms for in-flight streams",
                 options.drain_timeout.count());
    for (std::size_t w = 0; w < workers.size(); ++w)
      workers[w]->post([this, w] {
        if (w < acceptors.size())
          for (auto& a : acceptors[w]) a->close();
        workers[w]->beginDrain();
      });
    asio::steady_timer timer(io);
    const auto deadline = std::chrono::steady_clock::now() + options.drain_timeout;
    for (;;) {
      std::int64_t active = 0;
      for (auto& w : workers) active += w->activeStreams();
      if (active == 0) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        spdlog::warn("drain deadline passed with {} streams in flight", active);
        break;
      }
      timer.expires_after(std::chrono::milliseconds(20));
      co_await timer.async_wait(kTuple);
    }
    admin->close();
    io.stop();
  }

  awaitable<void> signalLoop() {
    for (;;) {
      auto [ec, sig] = co_await signals.async_wait(kTuple);
      if (ec) co_return;
      if (sig == SIGHUP) {
        spdlog::info("SIGHUP: reloading {}", options.config_path);
        reload();
      } else {
        co_await drainAndStop();
        co_return;
      }
    }
  }

  // Binds the listeners of the first config and starts accepting.
  void startServing() {
    listener_tls = std::make_unique<tls::ListenerTls>(current->listeners.size());
    if (std::string error; !prepare(*current, error)) throw std::runtime_error(error);
    bindListeners();
    publish(current);
    for (std::size_t w = 0; w < workers.size(); ++w)
      for (std::size_t l = 0; l < acceptors[w].size(); ++l)
        asio::co_spawn(workers[w]->io(),
                       acceptLoop(*workers[w], *acceptors[w][l], static_cast<std::uint32_t>(l), *listener_tls),
                       asio::detached);
    asio::co_spawn(io, watchCertificates(), asio::detached);
    serving = true;
  }

  // Certificate rotation: the files are checked every second; changed ones
  // are loaded for new connections (connections already up keep theirs).
  awaitable<void> watchCertificates() {
    asio::steady_timer timer(io);
    while (!draining) {
      timer.expires_after(std::chrono::seconds(1));
      co_await timer.async_wait(kTuple);
      listener_tls->poll();
      process.tls_reloads_ok = listener_tls->reloads_ok.load();
      process.tls_reloads_failed = listener_tls->reloads_failed.load();
    }
  }

  // On the main thread: a config from the control plane, already compiled.
  config::ConfigErrors adopt(std::shared_ptr<const config::Snapshot> snap) {
    if (draining) return {config::ConfigError{"control-plane", "", "", 0, "proxy is draining"}};
    if (serving && listenerKey(*snap) != listenerKey(*current))
      return {config::ConfigError{"control-plane", "", "", 0,
                                  "listeners (names or addresses) changed; restart the proxy to apply"}};
    process.serving_from_cache = false;
    source_note.clear();
    last_error.clear();
    ++process.config_reloads_ok;
    if (!serving) {
      current = snap;
      try {
        startServing();
      } catch (const std::exception& e) {
        spdlog::error("cannot start listeners: {}", e.what());
        return {config::ConfigError{"control-plane", "", "", 0, std::string("cannot start listeners: ") + e.what()}};
      }
    } else {
      if (std::string error; !prepare(*snap, error))
        return {config::ConfigError{"control-plane", "", "", 0, error}};
      publish(snap);
    }
    spdlog::info("config version {} from the control plane applied", snap->version);
    return {};
  }

  // On the ADS client's thread: compile, then hand over to the main thread.
  xds_client::ApplyResult applyFromControlPlane(const config::Resources& resources) {
    auto result = config::compile(resources, next_version++);
    if (!result.snapshot) {
      if (!config::onlyDanglingReferences(result.errors)) {
        ++process.config_reloads_failed;
        auto text = config::joinErrors(result.errors);
        asio::post(io, [this, text] { last_error = text; });
      }
      return {result.errors};
    }
    auto done = std::make_shared<std::promise<config::ConfigErrors>>();
    auto future = done->get_future();
    asio::post(io, [this, done, snap = result.snapshot] { done->set_value(adopt(snap)); });
    if (future.wait_for(std::chrono::seconds(10)) != std::future_status::ready)
      return {{config::ConfigError{"control-plane", "", "", 0, "proxy did not apply the config in time"}}};
    return {future.get()};
  }

  // --node-labels (checked in main): which proxy of a Mesh this one is.
  config::Labels nodeLabels() const {
    config::Labels labels;
    config::parseLabels(options.node_labels, labels);
    return labels;
  }

  bool loadInitialConfig() {
    if (options.control_plane.empty()) {
      auto result = config::loadAndCompile(options.config_path, next_version++, nodeLabels());
      if (!result.snapshot) {
        spdlog::error("invalid config:\n{}", config::joinErrors(result.errors));
        return false;
      }
      current = result.snapshot;
      return true;
    }
    process.xds_connected = 0;
    waiting_reason = "waiting for the first config from the control plane";
    if (options.config_cache.empty()) return true;
    config::Resources cached;
    std::string error;
    if (!xds_client::AdsClient::loadCache(options.config_cache, cached, error)) {
      spdlog::info("control-plane mode: {}", error);
      return true;
    }
    auto result = config::compile(cached, next_version++);
    if (!result.snapshot) {
      spdlog::warn("cached config {} is invalid, ignoring it:\n{}", options.config_cache,
                   config::joinErrors(result.errors));
      return true;
    }
    current = result.snapshot;
    process.serving_from_cache = true;
    source_note = " (from the cache " + options.config_cache + "; control plane not reached yet)";
    spdlog::warn("serving the cached config from {} until the control plane answers", options.config_cache);
    return true;
  }

  int run() {
    if (!loadInitialConfig()) return 1;
    const unsigned n = options.workers ? options.workers : std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < n; ++i) workers.push_back(std::make_unique<Worker>(i, n));
    // Active health results go to every worker, each applying them on its
    // own thread.
    health_checker = std::make_unique<upstream::HealthChecker>(
        [this](std::uint64_t key, bool healthy) {
          for (auto& w : workers) w->post([w = w.get(), key, healthy] { w->endpointHealthChanged(key, healthy); });
        },
        process,
        [this](std::uint64_t key, const upstream::LoadReport& report) {
          for (auto& w : workers) w->post([w = w.get(), key, report] { w->endpointLoadReported(key, report); });
        });
    upstream::SelfLocality self{options.region, options.zone};
    config::Labels node_labels;
    config::parseLabels(options.node_labels, node_labels);
    if (self.region.empty() && node_labels.contains("topology.kubernetes.io/region"))
      self.region = node_labels["topology.kubernetes.io/region"];
    if (self.zone.empty() && node_labels.contains("topology.kubernetes.io/zone"))
      self.zone = node_labels["topology.kubernetes.io/zone"];
    for (auto& w : workers) {
      w->setLocality(self);
      w->setHealthChecker(health_checker.get());
    }
    collector = std::make_unique<stats::MetricsCollector>([this] { return gatherStats(); }, process);
    try {
      if (current) startServing();
      admin = std::make_unique<AdminHttpServer>(io, options.admin_address,
                                                [this](std::string_view path) { return adminResponse(path); });
      announceText("admin", admin->boundAddress());
    } catch (const std::exception& e) {
      spdlog::error("cannot start: {}", e.what());
      return 1;
    }
    for (auto& w : workers) w->start();
    health_checker->start();
    admin->start();
    asio::co_spawn(io, signalLoop(), asio::detached);
    if (!options.control_plane.empty()) {
      discovery::v1::Node node;
      node.set_id(options.node_id);
      config::Labels labels;
      config::parseLabels(options.node_labels, labels);
      for (const auto& [k, v] : labels) (*node.mutable_labels())[k] = v;
      ads = std::make_unique<xds_client::AdsClient>(
          options.control_plane, node, options.config_cache,
          [this](const config::Resources& r) { return applyFromControlPlane(r); });
      ads->start();
    }
    spdlog::info("infermesh-proxy running: {} workers, {}", n,
                 current ? "config version " + std::to_string(current->version) : std::string(waiting_reason));
    io.run();
    if (ads) ads->stop();
    health_checker->stop();
    for (auto& w : workers) w->stopAndJoin();
    acceptors.clear();
    workers.clear();
    spdlog::info("stopped");
    spdlog::shutdown();
    return exit_code;
  }
};

Server::Server(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}
Server::~Server() = default;
int Server::run() { return impl_->run(); }

}  // namespace infermesh::proxy
