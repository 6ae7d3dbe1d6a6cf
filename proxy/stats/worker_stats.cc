#include "proxy/stats/worker_stats.h"

namespace infermesh::stats {

void WorkerStats::merge(const WorkerStats& o) {
  for (const auto& [key, r] : o.requests) {
    auto& mine = requests[key];
    for (std::size_t i = 0; i < mine.by_class.size(); ++i) mine.by_class[i] += r.by_class[i];
    mine.duration.merge(r.duration);
  }
  for (std::size_t i = 0; i < downstream_errors.size(); ++i) downstream_errors[i] += o.downstream_errors[i];
  for (std::size_t i = 0; i < upstream_errors.size(); ++i) upstream_errors[i] += o.upstream_errors[i];
  upstream_connections_opened += o.upstream_connections_opened;
  upstream_connections_reused += o.upstream_connections_reused;
  upstream_retries += o.upstream_retries;
  upstream_ejections += o.upstream_ejections;
  upstream_fallbacks += o.upstream_fallbacks;
  for (std::size_t i = 0; i < streams_aborted.size(); ++i) streams_aborted[i] += o.streams_aborted[i];
  for (std::size_t i = 0; i < shed.size(); ++i) shed[i] += o.shed[i];
  for (const auto& [key, counts] : o.mirrors) {
    auto& mine = mirrors[key];
    for (std::size_t i = 0; i < mine.size(); ++i) mine[i] += counts[i];
  }
  requests_queued += o.requests_queued;
  for (std::size_t i = 0; i < http2_protections.size(); ++i) http2_protections[i] += o.http2_protections[i];
  for (std::size_t i = 0; i < tls_handshakes.size(); ++i) tls_handshakes[i] += o.tls_handshakes[i];
  for (std::size_t i = 0; i < upstream_tls.size(); ++i) upstream_tls[i] += o.upstream_tls[i];
  downstream_disconnects += o.downstream_disconnects;
  downstream_connections_active += o.downstream_connections_active;
  upstream_connections_active += o.upstream_connections_active;
  if (filter_values.size() < o.filter_values.size()) filter_values.resize(o.filter_values.size());
  for (std::size_t i = 0; i < o.filter_values.size(); ++i) filter_values[i] += o.filter_values[i];
}

}  // namespace infermesh::stats
