#include "proxy/stats/worker_stats.h"

namespace infermesh::stats {

void WorkerStats::merge(const WorkerStats& o) {
  for (const auto& [key, by_class] : o.requests) {
    auto& mine = requests[key];
    for (std::size_t i = 0; i < mine.size(); ++i) mine[i] += by_class[i];
  }
  request_duration.merge(o.request_duration);
  for (std::size_t i = 0; i < downstream_errors.size(); ++i) downstream_errors[i] += o.downstream_errors[i];
  for (std::size_t i = 0; i < upstream_errors.size(); ++i) upstream_errors[i] += o.upstream_errors[i];
  upstream_connections_opened += o.upstream_connections_opened;
  upstream_connections_reused += o.upstream_connections_reused;
  upstream_retries += o.upstream_retries;
  upstream_ejections += o.upstream_ejections;
  upstream_fallbacks += o.upstream_fallbacks;
  streams_aborted += o.streams_aborted;
  downstream_disconnects += o.downstream_disconnects;
  downstream_connections_active += o.downstream_connections_active;
  upstream_connections_active += o.upstream_connections_active;
}

}  // namespace infermesh::stats
