#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "proxy/config/snapshot.h"

namespace infermesh::proxy {
class Worker;
}

namespace infermesh::router {

// Sends a shadow copy of a request to `model` and discards the answer. Runs
// on its own on the worker: it never delays or fails the primary, and at
// most kMaxMirrorsInFlight run per worker (more are dropped and counted).
// `head` is the request head up to and including "host: "; `body` already
// names the mirror model. The snapshot keeps `model` alive.
void spawnMirror(proxy::Worker& worker, std::shared_ptr<const config::Snapshot> snapshot,
                 const config::ModelConfig& model, std::string head, std::string body,
                 std::chrono::milliseconds idle_timeout);

inline constexpr std::uint32_t kMaxMirrorsInFlight = 64;

}  // namespace infermesh::router
