#pragma once

// Per-model autoscaling gauges that two filters move: the telemetry filter
// declares them for each snapshot (so they exist where it runs) and counts
// the requests and tokens in flight; the router counts the requests waiting
// for a model's admission slot. Found by a fixed runtime slot, so the
// request path indexes a vector.
#include <cstdint>
#include <vector>

#include "proxy/stats/filter_metrics.h"

namespace infermesh::filter {

struct ModelSignals {
  struct PerModel {
    stats::GaugeMetric requests_in_flight, tokens_in_flight, requests_queued;
  };
  std::vector<PerModel> by_model;  // by model index
};

// Where a Snapshot's filter_runtime holds them; empty without telemetry.
extern const std::uint32_t kModelSignalsSlot;

}  // namespace infermesh::filter
