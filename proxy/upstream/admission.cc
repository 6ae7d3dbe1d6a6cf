#include "proxy/upstream/admission.h"

#include <algorithm>

namespace infermesh::upstream {

std::uint32_t workerShare(std::uint32_t limit, unsigned workers) {
  if (limit == 0 || workers <= 1) return limit;
  return std::max<std::uint32_t>(1, (limit + workers - 1) / workers);
}

Admission ModelGate::acquire(std::uint32_t max_requests, std::uint32_t max_pending, config::Priority p) {
  // Waiters go first: a newcomer does not overtake the queue.
  if (max_requests == 0 || (requests_ < max_requests && queue_.empty())) {
    ++requests_;
    return Admission::Granted;
  }
  if (p == config::Priority::Low || max_pending == 0) return Admission::Shed;
  return Admission::MustWait;
}

bool ModelGate::enqueue(Waiter& w, std::uint32_t max_pending) {
  if (queue_.size() >= max_pending) {
    // The queue is full: the newest of its lowest priority gives way, if
    // that is lower than the newcomer's.
    Waiter* lowest = nullptr;
    for (Waiter* q : queue_)
      if (lowest == nullptr || q->priority <= lowest->priority) lowest = q;
    if (lowest == nullptr || lowest->priority >= w.priority) return false;
    queue_.remove(lowest);
    lowest->shed = true;
    lowest->wake();
  }
  auto at = std::find_if(queue_.begin(), queue_.end(), [&](Waiter* q) { return q->priority < w.priority; });
  queue_.insert(at, &w);
  return true;
}

void ModelGate::cancel(Waiter& w) { queue_.remove(&w); }

void ModelGate::release() {
  if (queue_.empty()) {
    --requests_;
    return;
  }
  // The slot passes straight to the next waiter; requests_ stays the same.
  Waiter* next = queue_.front();
  queue_.pop_front();
  next->granted = true;
  next->wake();
}

bool ModelGate::openConnection(std::uint32_t max_connections) {
  if (max_connections != 0 && connections_ >= max_connections) return false;
  ++connections_;
  return true;
}

bool ModelGate::waitForActivation(Waiter& w, std::uint32_t max_queued) {
  if (cold_.size() >= max_queued) return false;
  cold_.push_back(&w);
  return true;
}

void ModelGate::activated() {
  auto waiting = std::move(cold_);
  cold_.clear();
  for (Waiter* w : waiting) {
    w->granted = true;
    w->wake();
  }
}

}  // namespace infermesh::upstream
