#include "proxy/audit/record_queue.h"

namespace infermesh::audit {

RecordQueue::RecordQueue(std::size_t capacity)
    : capacity_(capacity < 2 ? 2 : capacity), slots_(std::make_unique<Slot[]>(capacity_)) {
  for (std::size_t i = 0; i < capacity_; ++i) slots_[i].seq.store(i, std::memory_order_relaxed);
}

bool RecordQueue::tryPush(std::string& value) {
  std::uint64_t pos = enqueue_pos_.load(std::memory_order_relaxed);
  for (;;) {
    Slot& slot = slots_[pos % capacity_];
    const std::uint64_t seq = slot.seq.load(std::memory_order_acquire);
    const auto diff = static_cast<std::int64_t>(seq - pos);
    if (diff == 0) {
      if (enqueue_pos_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
        slot.value = std::move(value);
        slot.seq.store(pos + 1, std::memory_order_release);
        return true;
      }
      // pos now holds the current position: try that one.
    } else if (diff < 0) {
      return false;  // the slot still holds the record of the previous lap
    } else {
      pos = enqueue_pos_.load(std::memory_order_relaxed);
    }
  }
}

bool RecordQueue::tryPop(std::string& out) {
  Slot& slot = slots_[dequeue_pos_ % capacity_];
  if (slot.seq.load(std::memory_order_acquire) != dequeue_pos_ + 1) return false;
  out = std::move(slot.value);
  slot.value = std::string();  // drop the moved-from buffer here, not on a producer's thread
  slot.seq.store(dequeue_pos_ + capacity_, std::memory_order_release);
  ++dequeue_pos_;
  return true;
}

bool RecordQueue::readable() const {
  return slots_[dequeue_pos_ % capacity_].seq.load(std::memory_order_acquire) == dequeue_pos_ + 1;
}

}  // namespace infermesh::audit
