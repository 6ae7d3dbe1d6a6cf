#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace infermesh::audit {

// A bounded multi-producer, single-consumer ring of strings (Vyukov's
// bounded queue with one consumer): a producer claims a position with one
// CAS and publishes through the slot's sequence number, so request threads
// never take a lock or allocate here. Hand-written because no library in
// the build offers a bounded queue of movable strings without a mutex.
class RecordQueue {
 public:
  // capacity >= 2: with one slot, "published" and "free for the next lap"
  // would carry the same sequence number.
  explicit RecordQueue(std::size_t capacity);

  // Moves `value` in and returns true, or leaves it alone and returns false
  // when every slot is taken.
  bool tryPush(std::string& value);
  // Consumer only.
  bool tryPop(std::string& out);
  // Consumer only: the next position holds a published record.
  bool readable() const;
  // Positions claimed by producers so far (published or about to be).
  std::uint64_t claimed() const { return enqueue_pos_.load(std::memory_order_acquire); }
  std::size_t capacity() const { return capacity_; }

 private:
  struct alignas(64) Slot {
    std::atomic<std::uint64_t> seq{0};
    std::string value;
  };

  std::size_t capacity_;
  std::unique_ptr<Slot[]> slots_;
  alignas(64) std::atomic<std::uint64_t> enqueue_pos_{0};
  alignas(64) std::uint64_t dequeue_pos_ = 0;
};

}  // namespace infermesh::audit
