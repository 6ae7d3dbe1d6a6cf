#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

#include "proxy/config/snapshot.h"

namespace infermesh::upstream {

using Clock = std::chrono::steady_clock;

// What one worker knows about one endpoint (keyed by EndpointConfig::key, so
// it survives reloads). Per worker: no sharing, no locks.
struct EndpointHealth {
  std::int64_t outstanding = 0;  // requests in flight from this worker
  std::uint32_t consecutive_failures = 0;
  std::uint32_t ejections = 0;  // how often it was ejected (the backoff grows)
  Clock::time_point ejected_until{};
};

class EndpointStates {
 public:
  EndpointHealth& get(std::uint64_t key) { return states_[key]; }

 private:
  std::unordered_map<std::uint64_t, EndpointHealth> states_;
};

// Picks the endpoint (index into model.endpoints) for the next attempt, or
// -1 when every endpoint has been tried. Ejected endpoints are skipped
// unless nothing else is left.
int pickEndpoint(const config::ModelConfig& model, EndpointStates& states, std::uint32_t& rr_counter,
                 std::mt19937_64& rng, const std::vector<bool>& tried, Clock::time_point now);

// Records an attempt's outcome for outlier detection. Returns true when
// this failure ejected the endpoint.
bool recordOutcome(const config::ModelConfig& model, EndpointStates& states, std::size_t endpoint, bool success,
                   Clock::time_point now);

}  // namespace infermesh::upstream
