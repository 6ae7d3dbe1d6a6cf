#include "proxy/stats/metrics_collector.h"

#include <prometheus/metric_family.h>

#include "proxy/stats/filter_metrics.h"
#include "proxy/stats/name_table.h"
#include "proxy/tls/server_tls.h"

namespace infermesh::stats {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

MetricFamily family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void addValue(MetricFamily& f, double v, std::vector<prometheus::ClientMetric::Label> labels = {}) {
  ClientMetric m;
  m.label = std::move(labels);
  if (f.type == MetricType::Counter) m.counter.value = v;
  else m.gauge.value = v;
  f.metric.push_back(std::move(m));
}

}  // namespace

std::vector<MetricFamily> MetricsCollector::Collect() const {
  WorkerStats total;
  for (const auto& w : gather_()) total.merge(w);
  std::vector<MetricFamily> out;
  auto& names = NameTable::instance();

  auto requests = family("infermesh_http_requests_total",
                         "Downstream requests by route, model and response status class (0xx: no response).",
                         MetricType::Counter);
  static constexpr const char* kClass[] = {"0xx", "1xx", "2xx", "3xx", "4xx", "5xx"};
  auto duration = family("infermesh_http_request_duration_seconds",
                         "Time from request head to the end of the response, by route and served model.",
                         MetricType::Histogram);
  for (const auto& [key, r] : total.requests) {
    const std::string route = names.name(static_cast<std::uint32_t>(key >> 32));
    const std::string model = names.name(static_cast<std::uint32_t>(key & 0xffffffff));
    for (std::size_t c = 0; c < r.by_class.size(); ++c)
      if (r.by_class[c])
        addValue(requests, static_cast<double>(r.by_class[c]),
                 {{"route", route}, {"model", model}, {"status_class", kClass[c]}});
    ClientMetric h;
    h.label = {{"route", route}, {"model", model}};
    h.histogram.sample_count = r.duration.count;
    h.histogram.sample_sum = r.duration.sum;
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= kDurationBuckets.size(); ++i) {
      cumulative += r.duration.counts[i];
      ClientMetric::Bucket b;
      b.cumulative_count = cumulative;
      b.upper_bound = i < kDurationBuckets.size() ? kDurationBuckets[i] : std::numeric_limits<double>::infinity();
      h.histogram.bucket.push_back(b);
    }
    duration.metric.push_back(std::move(h));
  }
  out.push_back(std::move(requests));
  out.push_back(std::move(duration));

  auto down = family("infermesh_downstream_errors_total", "Requests the proxy rejected or answered itself, by reason.",
                     MetricType::Counter);
  for (std::size_t i = 0; i < total.downstream_errors.size(); ++i)
    addValue(down, static_cast<double>(total.downstream_errors[i]), {{"reason", kDownstreamErrorNames[i]}});
  out.push_back(std::move(down));

  auto up = family("infermesh_upstream_errors_total",
                   "Upstream failures by reason (connect_failure counts failed connection attempts).",
                   MetricType::Counter);
  for (std::size_t i = 0; i < total.upstream_errors.size(); ++i)
    addValue(up, static_cast<double>(total.upstream_errors[i]), {{"reason", kUpstreamErrorNames[i]}});
  out.push_back(std::move(up));

  auto simple = [&](const char* name, const char* help, MetricType type, double v) {
    auto f = family(name, help, type);
    addValue(f, v);
    out.push_back(std::move(f));
  };
  simple("infermesh_upstream_connections_opened_total", "Upstream connections opened.", MetricType::Counter,
         static_cast<double>(total.upstream_connections_opened));
  simple("infermesh_upstream_connections_reused_total", "Requests sent on a pooled keep-alive connection.",
         MetricType::Counter, static_cast<double>(total.upstream_connections_reused));
  simple("infermesh_upstream_retries_total", "Attempts on another endpoint after a failure (see a route's retry).",
         MetricType::Counter, static_cast<double>(total.upstream_retries));
  simple("infermesh_upstream_fallbacks_total", "Requests moved on to a route's fallback model.", MetricType::Counter,
         static_cast<double>(total.upstream_fallbacks));
  simple("infermesh_upstream_ejections_total", "Endpoints taken out by outlier detection.", MetricType::Counter,
         static_cast<double>(total.upstream_ejections));
  auto aborted = family("infermesh_streams_aborted_total",
                        "Responses that failed after they had started (the client sees an error), by reason.",
                        MetricType::Counter);
  for (std::size_t i = 0; i < total.streams_aborted.size(); ++i)
    addValue(aborted, static_cast<double>(total.streams_aborted[i]), {{"reason", kAbortReasonNames[i]}});
  out.push_back(std::move(aborted));
  auto shed = family("infermesh_requests_shed_total",
                     "Requests answered 503 by circuit breakers, overload or cold-start queues, by reason "
                     "(retry_budget: retries not made).",
                     MetricType::Counter);
  for (std::size_t i = 0; i < total.shed.size(); ++i)
    addValue(shed, static_cast<double>(total.shed[i]), {{"reason", kShedReasonNames[i]}});
  out.push_back(std::move(shed));
  auto mirrors = family("infermesh_mirror_requests_total",
                        "Shadow copies of requests by model and result (dropped: too many in flight).",
                        MetricType::Counter);
  static constexpr const char* kMirrorResult[] = {"ok", "error", "dropped"};
  for (const auto& [model_id, counts] : total.mirrors)
    for (std::size_t i = 0; i < counts.size(); ++i)
      addValue(mirrors, static_cast<double>(counts[i]), {{"model", names.name(model_id)}, {"result", kMirrorResult[i]}});
  out.push_back(std::move(mirrors));
  auto h2 = family("infermesh_http2_protections_total",
                   "HTTP/2 abuse stopped, by reason: floods and rapid resets end the connection with GOAWAY, "
                   "streams over the limit are refused, protocol errors close the connection.",
                   MetricType::Counter);
  for (std::size_t i = 0; i < total.http2_protections.size(); ++i)
    addValue(h2, static_cast<double>(total.http2_protections[i]), {{"reason", kHttp2ProtectionNames[i]}});
  out.push_back(std::move(h2));
  auto handshakes = family("infermesh_tls_handshakes_total",
                           "TLS handshakes on listeners by result (failures name why the client was refused).",
                           MetricType::Counter);
  for (std::size_t i = 0; i < static_cast<std::size_t>(tls::HandshakeResult::Count); ++i)
    addValue(handshakes, static_cast<double>(total.tls_handshakes[i]), {{"result", tls::kHandshakeResultNames[i]}});
  out.push_back(std::move(handshakes));
  auto up_tls = family("infermesh_upstream_tls_handshakes_total",
                        "TLS handshakes toward endpoints by result (resumed: an earlier session was reused).",
                        MetricType::Counter);
  static constexpr const char* kUpstreamTls[] = {"full", "resumed", "failed"};
  for (std::size_t i = 0; i < total.upstream_tls.size(); ++i)
    addValue(up_tls, static_cast<double>(total.upstream_tls[i]), {{"result", kUpstreamTls[i]}});
  out.push_back(std::move(up_tls));
  auto rotations = family("infermesh_tls_certificate_reloads_total",
                          "Certificate files reloaded after they changed on disk, by result.", MetricType::Counter);
  addValue(rotations, static_cast<double>(process_.tls_reloads_ok.load()), {{"result", "ok"}});
  addValue(rotations, static_cast<double>(process_.tls_reloads_failed.load()), {{"result", "error"}});
  out.push_back(std::move(rotations));
  simple("infermesh_requests_queued", "Requests waiting for a slot or for a cold model to wake.", MetricType::Gauge,
         static_cast<double>(total.requests_queued));
  auto checks = family("infermesh_health_checks_total", "Active health checks by result.", MetricType::Counter);
  addValue(checks, static_cast<double>(process_.health_checks_passed.load()), {{"result", "passed"}});
  addValue(checks, static_cast<double>(process_.health_checks_failed.load()), {{"result", "failed"}});
  out.push_back(std::move(checks));
  auto polls = family("infermesh_load_reports_polled_total",
                      "Out-of-band load report polls (Model.loadReport) by result.", MetricType::Counter);
  addValue(polls, static_cast<double>(process_.load_reports_polled.load()), {{"result", "ok"}});
  addValue(polls, static_cast<double>(process_.load_report_failures.load()), {{"result", "failed"}});
  out.push_back(std::move(polls));
  simple("infermesh_endpoints_unhealthy", "Endpoints failing their active health check.", MetricType::Gauge,
         static_cast<double>(process_.endpoints_unhealthy.load()));
  auto activations = family("infermesh_activations_total", "Scale-from-zero webhook calls by result.",
                            MetricType::Counter);
  addValue(activations, static_cast<double>(process_.activations.load() - process_.activation_failures.load()),
           {{"result", "ok"}});
  addValue(activations, static_cast<double>(process_.activation_failures.load()), {{"result", "error"}});
  out.push_back(std::move(activations));
  simple("infermesh_downstream_disconnects_total",
         "Clients that went away before their response ended (the upstream exchange is cancelled).",
         MetricType::Counter, static_cast<double>(total.downstream_disconnects));
  simple("infermesh_downstream_connections_active", "Open client connections.", MetricType::Gauge,
         static_cast<double>(total.downstream_connections_active));
  simple("infermesh_upstream_connections_active", "Upstream connections carrying a request now.", MetricType::Gauge,
         static_cast<double>(total.upstream_connections_active));
  simple("infermesh_config_version", "Version of the config snapshot in force.", MetricType::Gauge,
         static_cast<double>(process_.config_version.load()));
  if (process_.xds_connected.load() >= 0) {
    simple("infermesh_xds_connected", "1 while the stream to the control plane is up.", MetricType::Gauge,
           process_.xds_connected.load());
    simple("infermesh_config_from_cache", "1 while serving the cached config, before the control plane answered.",
           MetricType::Gauge, process_.serving_from_cache.load() ? 1 : 0);
  }
  auto reloads = family("infermesh_config_reloads_total", "Config reloads by result.", MetricType::Counter);
  addValue(reloads, static_cast<double>(process_.config_reloads_ok.load()), {{"result", "ok"}});
  addValue(reloads, static_cast<double>(process_.config_reloads_failed.load()), {{"result", "error"}});
  out.push_back(std::move(reloads));
  // What filters declared, summed over the workers.
  const auto slotValue = [&](std::uint32_t slot) {
    return slot < total.filter_values.size() ? total.filter_values[slot] : 0.0;
  };
  for (const auto& f : FilterMetrics::instance().families()) {
    const auto type = f.kind == FilterMetrics::Kind::Counter ? MetricType::Counter
                      : f.kind == FilterMetrics::Kind::Gauge ? MetricType::Gauge
                                                             : MetricType::Histogram;
    auto fam = family(f.name, f.help, type);
    for (const auto& series : f.series) {
      std::vector<ClientMetric::Label> labels;
      for (const auto& [k, v] : series.labels) labels.push_back({k, v});
      if (type != MetricType::Histogram) {
        const double shared = series.shared ? static_cast<double>(series.shared->load(std::memory_order_relaxed)) : 0;
        addValue(fam, slotValue(series.slot) + shared, std::move(labels));
        continue;
      }
      ClientMetric m;
      m.label = std::move(labels);
      const auto width = static_cast<std::uint32_t>(f.bounds.size()) + 1;
      double cumulative = 0;
      for (std::uint32_t b = 0; b < width; ++b) {
        cumulative += slotValue(series.slot + b);
        ClientMetric::Bucket bucket;
        bucket.cumulative_count = static_cast<std::uint64_t>(cumulative);
        bucket.upper_bound = b < f.bounds.size() ? f.bounds[b] : std::numeric_limits<double>::infinity();
        m.histogram.bucket.push_back(bucket);
      }
      m.histogram.sample_sum = slotValue(series.slot + width);
      m.histogram.sample_count = static_cast<std::uint64_t>(slotValue(series.slot + width + 1));
      fam.metric.push_back(std::move(m));
    }
    out.push_back(std::move(fam));
  }
  return out;
}

}  // namespace infermesh::stats
