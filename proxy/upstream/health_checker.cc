#include "proxy/upstream/health_checker.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <spdlog/spdlog.h>

#include <random>
#include <thread>
#include <unordered_map>

#include "proxy/stats/metrics_collector.h"
#include "proxy/tls/transport.h"
#include "proxy/tls/client_tls.h"
#include "proxy/upstream/load_balancer.h"

namespace infermesh::upstream {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// One short HTTP/1.1 exchange on a fresh connection (TLS when `tls` is
// set, as the model's traffic uses), bounded by `timeout` overall. Returns
// the status, or 0 when there was no valid response. With `load`, the
// response's load report (header, then body) is parsed into it.
awaitable<unsigned> requestOnce(const std::string& ip, std::uint16_t port, std::string request,
                                std::chrono::milliseconds timeout, const tls::ClientContext* tls = nullptr,
                                const config::EndpointConfig* endpoint = nullptr, LoadReport* load = nullptr) {
  proxy::UpstreamStream stream(beast::tcp_stream(co_await asio::this_coro::executor));
  boost::system::error_code ec;
  const asio::ip::tcp::endpoint ep(asio::ip::make_address(ip, ec), port);
  if (ec) co_return 0;
  stream.lower().expires_after(timeout);
  auto [cec] = co_await stream.lower().async_connect(ep, kTuple);
  if (cec) co_return 0;
  if (tls != nullptr && endpoint != nullptr) {
    SSL* ssl = tls->newSsl(*endpoint);
    if (ssl == nullptr) co_return 0;
    stream.startTls(ssl);
    auto [hec] = co_await stream.tlsStream()->async_handshake(asio::ssl::stream_base::client, kTuple);
    if (hec) co_return 0;
  }
  auto [wec, wn] = co_await asio::async_write(stream, asio::buffer(request), kTuple);
  if (wec) co_return 0;
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024);
  auto [rec, rn] = co_await http::async_read(stream, buffer, parser, kTuple);
  if (rec) co_return 0;
  if (load != nullptr) {
    const auto& res = parser.get();
    if (auto it = res.find("endpoint-load-metrics"); it != res.end()) parseLoadReport(it->value(), *load);
    // The body's fields win: a metrics page is the fuller report.
    LoadReport body;
    if (parseLoadReport(res.body(), body)) {
      if (body.running >= 0) load->running = body.running;
      if (body.waiting >= 0) load->waiting = body.waiting;
      if (body.kv_utilization >= 0) load->kv_utilization = body.kv_utilization;
      if (body.capacity >= 0) load->capacity = body.capacity;
    }
  }
  co_return parser.get().result_int();
}

struct Probe {
  std::string ip;
  std::uint16_t port = 0;
  std::string address;
  config::EndpointConfig endpoint;
  std::shared_ptr<const tls::ClientContext> tls;  // the model's upstream TLS, if any
  config::HealthCheckConfig check;
  ActiveHealth state = ActiveHealth::Unknown;
  std::uint32_t passes = 0;
  std::uint32_t failures = 0;
  bool stopped = false;
  asio::steady_timer timer;
  explicit Probe(asio::io_context& io) : timer(io) {}
};

// One endpoint's out-of-band load report loop.
struct LoadPoll {
  std::string ip;
  std::uint16_t port = 0;
  std::string address;
  config::EndpointConfig endpoint;
  std::shared_ptr<const tls::ClientContext> tls;
  config::LoadReportConfig config;
  bool stopped = false;
  asio::steady_timer timer;
  explicit LoadPoll(asio::io_context& io) : timer(io) {}
};

}  // namespace

struct HealthChecker::Impl {
  Publish publish;
  PublishLoad publish_load;
  stats::ProcessStats& stats;
  asio::io_context io{1};
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::thread thread;
  std::mt19937_64 rng{std::random_device{}()};
  std::unordered_map<std::uint64_t, std::shared_ptr<Probe>> probes;  // by endpoint key
  std::unordered_map<std::uint64_t, std::shared_ptr<LoadPoll>> polls;  // by endpoint key
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> activating;  // by model name
  std::shared_ptr<const config::Snapshot> snapshot;

  Impl(Publish p, stats::ProcessStats& s, PublishLoad l) : publish(std::move(p)), publish_load(std::move(l)), stats(s) {}

  void apply(std::shared_ptr<const config::Snapshot> snap) {
    snapshot = std::move(snap);
    struct Wanted {
      const config::EndpointConfig* endpoint;
      const config::HealthCheckConfig* check;
      std::shared_ptr<const tls::ClientContext> tls;
    };
    std::unordered_map<std::uint64_t, Wanted> want;
    for (const auto& m : snapshot->models)
      if (m.health_check.enabled())
        for (const auto& ep : m.endpoints)
          want.emplace(ep.key, Wanted{&ep, &m.health_check,
                                      m.index < snapshot->upstream_tls.size() ? snapshot->upstream_tls[m.index] : nullptr});
    for (auto it = probes.begin(); it != probes.end();) {
      if (want.contains(it->first)) {
        ++it;
        continue;
      }
      // No longer checked: it stops counting as unhealthy anywhere.
      auto& p = *it->second;
      p.stopped = true;
      p.timer.cancel();
      if (p.state == ActiveHealth::Unhealthy) --stats.endpoints_unhealthy;
      publish(it->first, true);
      it = probes.erase(it);
    }
    for (const auto& [key, what] : want) {
      auto& p = probes[key];
      if (p) {
        p->check = *what.check;
        p->tls = what.tls;
        continue;
      }
      p = std::make_shared<Probe>(io);
      p->ip = what.endpoint->ip;
      p->port = what.endpoint->port;
      p->address = what.endpoint->address;
      p->endpoint = *what.endpoint;
      p->check = *what.check;
      p->tls = what.tls;
      asio::co_spawn(io, run(key, p), asio::detached);
    }
    applyLoadReports();
  }

  // Starts, retunes and stops the load report loops (an endpoint shared by
  // several models is polled once, by the first model's settings).
  void applyLoadReports() {
    struct Wanted {
      const config::EndpointConfig* endpoint;
      const config::LoadReportConfig* config;
      std::shared_ptr<const tls::ClientContext> tls;
    };
    std::unordered_map<std::uint64_t, Wanted> want;
    if (publish_load)
      for (const auto& m : snapshot->models)
        if (m.load_report.enabled())
          for (const auto& ep : m.endpoints)
            want.emplace(ep.key, Wanted{&ep, &m.load_report,
                                        m.index < snapshot->upstream_tls.size() ? snapshot->upstream_tls[m.index] : nullptr});
    for (auto it = polls.begin(); it != polls.end();) {
      if (want.contains(it->first)) {
        ++it;
        continue;
      }
      it->second->stopped = true;
      it->second->timer.cancel();
      it = polls.erase(it);
    }
    for (const auto& [key, what] : want) {
      auto& p = polls[key];
      if (p) {
        p->config = *what.config;
        p->tls = what.tls;
        continue;
      }
      p = std::make_shared<LoadPoll>(io);
      p->ip = what.endpoint->ip;
      p->port = what.endpoint->port;
      p->address = what.endpoint->address;
      p->endpoint = *what.endpoint;
      p->config = *what.config;
      p->tls = what.tls;
      asio::co_spawn(io, poll(key, p), asio::detached);
    }
  }

  awaitable<void> poll(std::uint64_t key, std::shared_ptr<LoadPoll> p) {
    while (!p->stopped) {
      const std::string request = "GET " + p->config.path + " HTTP/1.1\r\nhost: " + p->address +
                                  "\r\nuser-agent: infermesh-load-report\r\nconnection: close\r\n\r\n";
      LoadReport report;
      const unsigned status =
          co_await requestOnce(p->ip, p->port, request, p->config.timeout, p->tls.get(), &p->endpoint, &report);
      if (p->stopped) co_return;
      // A failed poll says nothing about load: the last report ages instead.
      if (status >= 200 && status < 300 && report.any()) {
        ++stats.load_reports_polled;
        publish_load(key, report);
      } else {
        ++stats.load_report_failures;
      }
      p->timer.expires_after(p->config.interval);
      co_await p->timer.async_wait(kTuple);
    }
  }

  awaitable<void> run(std::uint64_t key, std::shared_ptr<Probe> p) {
    while (!p->stopped) {
      const std::string request = "GET " + p->check.path + " HTTP/1.1\r\nhost: " + p->address +
                                  "\r\nuser-agent: infermesh-health-check\r\nconnection: close\r\n\r\n";
      const unsigned status = co_await requestOnce(p->ip, p->port, request, p->check.timeout, p->tls.get(), &p->endpoint);
      if (p->stopped) co_return;
      record(key, *p, status >= 200 && status < 300);
      auto wait = p->check.interval;
      if (p->check.jitter.count() > 0)
        wait += std::chrono::milliseconds(std::uniform_int_distribution<long>(0, p->check.jitter.count())(rng));
      p->timer.expires_after(wait);
      co_await p->timer.async_wait(kTuple);
    }
  }

  void record(std::uint64_t key, Probe& p, bool ok) {
    // The first result decides at once; after that the thresholds apply.
    if (ok) {
      ++stats.health_checks_passed;
      ++p.passes;
      p.failures = 0;
      if (p.state != ActiveHealth::Healthy &&
          (p.state == ActiveHealth::Unknown || p.passes >= p.check.healthy_threshold)) {
        if (p.state == ActiveHealth::Unhealthy) {
          --stats.endpoints_unhealthy;
          spdlog::info("health check: {} is healthy again", p.address);
        }
        p.state = ActiveHealth::Healthy;
        publish(key, true);
        // Models served by it are no longer cold.
        for (const auto& m : snapshot->models)
          for (const auto& ep : m.endpoints)
            if (ep.key == key) activating.erase(m.name);
      }
    } else {
      ++stats.health_checks_failed;
      ++p.failures;
      p.passes = 0;
      if (p.state != ActiveHealth::Unhealthy &&
          (p.state == ActiveHealth::Unknown || p.failures >= p.check.unhealthy_threshold)) {
        p.state = ActiveHealth::Unhealthy;
        ++stats.endpoints_unhealthy;
        spdlog::warn("health check: {} is unhealthy", p.address);
        publish(key, false);
      }
    }
  }

  void activate(const std::string& model, const config::ActivationConfig& a) {
    const auto now = std::chrono::steady_clock::now();
    if (auto it = activating.find(model); it != activating.end() && it->second > now) return;
    activating[model] = now + a.queue_timeout;
    ++stats.activations;
    spdlog::info("model {} has no healthy endpoint: calling its activation webhook {}", model, a.webhook);
    const std::string body = "{\"model\":\"" + model + "\"}";
    std::string request = "POST " + a.path + " HTTP/1.1\r\nhost: " + a.host_header +
                          "\r\ncontent-type: application/json\r\ncontent-length: " + std::to_string(body.size()) +
                          "\r\nconnection: close\r\n\r\n" + body;
    asio::co_spawn(
        io,
        [this, a, model, request = std::move(request)]() -> awaitable<void> {
          const unsigned status = co_await requestOnce(a.ip, a.port, request, std::chrono::seconds(5));
          if (status < 200 || status >= 300) {
            ++stats.activation_failures;
            spdlog::warn("activation webhook for model {} failed (status {})", model, status);
          }
        },
        asio::detached);
  }
};

HealthChecker::HealthChecker(Publish publish, stats::ProcessStats& stats, PublishLoad publish_load)
    : impl_(std::make_shared<Impl>(std::move(publish), stats, std::move(publish_load))) {}

HealthChecker::~HealthChecker() { stop(); }

void HealthChecker::start() {
  impl_->thread = std::thread([impl = impl_] { impl->io.run(); });
}

void HealthChecker::stop() {
  if (!impl_->thread.joinable()) return;
  impl_->io.stop();
  impl_->thread.join();
}

void HealthChecker::update(std::shared_ptr<const config::Snapshot> snapshot) {
  asio::post(impl_->io, [impl = impl_, snapshot = std::move(snapshot)]() mutable { impl->apply(std::move(snapshot)); });
}

void HealthChecker::activate(std::shared_ptr<const config::Snapshot> snapshot, const config::ModelConfig& model) {
  if (!model.activation.enabled()) return;
  asio::post(impl_->io, [impl = impl_, snapshot = std::move(snapshot), &model] {
    impl->activate(model.name, model.activation);  // the snapshot keeps `model` alive
  });
}

}  // namespace infermesh::upstream
