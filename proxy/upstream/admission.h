#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>

#include "proxy/config/snapshot.h"

namespace infermesh::upstream {

// A request waiting for a slot (overload) or for a model to wake up (cold
// start). The gate sets `granted` or `shed` and calls `wake`; the waiter
// owns the object and removes it if it stops waiting first.
struct Waiter {
  config::Priority priority = config::Priority::Normal;
  bool granted = false;
  bool shed = false;
  std::function<void()> wake;
};

enum class Admission { Granted, MustWait, Shed };

// One model's circuit breakers, overload queue and cold-start queue on one
// worker. Limits are per worker (the config's per-proxy limits divided by
// the worker count): no shared state on the request path. No I/O here;
// the router does the waiting.
class ModelGate {
 public:
  // A request slot. MustWait: call enqueue(); Shed: answer 503 at once.
  // Low priority is never queued: it is what gets shed first.
  Admission acquire(std::uint32_t max_requests, std::uint32_t max_pending, config::Priority p);
  // Queues a waiter that got MustWait. A full queue gives way to a higher
  // priority by shedding its lowest-priority, newest waiter; returns false
  // when the new waiter itself is shed.
  bool enqueue(Waiter& w, std::uint32_t max_pending);
  // The waiter stopped waiting (deadline, client gone) before it was granted.
  void cancel(Waiter& w);
  // A slot is free again: the highest-priority, oldest waiter gets it.
  void release();

  bool openConnection(std::uint32_t max_connections);
  void closeConnection() { --connections_; }

  // Cold start: requests wait until an endpoint turns healthy.
  bool waitForActivation(Waiter& w, std::uint32_t max_queued);
  void cancelActivation(Waiter& w) { cold_.remove(&w); }
  void activated();  // every cold waiter is granted
  std::size_t coldWaiting() const { return cold_.size(); }

  std::uint32_t requests() const { return requests_; }
  std::uint32_t connections() const { return connections_; }
  std::size_t waiting() const { return queue_.size(); }

 private:
  std::uint32_t requests_ = 0;
  std::uint32_t connections_ = 0;
  std::list<Waiter*> queue_;  // highest priority first, FIFO within one
  std::list<Waiter*> cold_;
};

// A per-proxy limit as one worker's share (rounded up; 0 stays unlimited).
std::uint32_t workerShare(std::uint32_t limit, unsigned workers);

}  // namespace infermesh::upstream
