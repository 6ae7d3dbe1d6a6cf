#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace infermesh::audit {

struct AuditLogOptions {
  std::string path;
  // Rotate when the file would pass this: path -> path.1 -> path.2 ...,
  // keep_files of them (0: the full file is removed).
  std::uint64_t max_bytes = 100ull << 20;
  std::uint32_t keep_files = 5;
  // Records waiting to be written (at least 2); past it submit() drops and
  // counts. Fixed by the first open() of a path.
  std::size_t queue_capacity = 65536;
  bool operator==(const AuditLogOptions&) const = default;
};

// A hash-chained, append-only log of JSON lines (docs/audit.md), written by
// its own thread so that request threads only hand a string over. The
// writer stops, after writing what is queued, when the last holder lets go
// or at process exit.
class AuditLog {
 public:
  // One writer per path in the process: the same path gives the same object
  // (changed max_bytes/keep_files are applied to it). Continues the chain of
  // an existing file (or of path.1 when path is empty or missing). Null with
  // `error` set when the options are unusable, the file cannot be opened, or
  // its last line is not a complete record.
  static std::shared_ptr<AuditLog> open(const AuditLogOptions& options, std::string& error);

  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Any thread; never blocks on the writer and never allocates. `fields` is
  // the inside of a JSON object, already escaped
  // ("\"time\":\"...\",\"tenant\":\"a\""). False, and one more drop
  // counted, when the queue is full.
  bool submit(std::string fields);
  // Returns when everything submitted before the call is written and
  // fdatasync'ed. While writes fail (disk full) it waits for them to succeed.
  void flush();

  std::uint64_t written() const;
  std::uint64_t dropped() const;
  std::uint64_t writeErrors() const;
  std::uint64_t rotations() const;

 private:
  class Writer;
  class Registry;
  AuditLog(std::string key, std::unique_ptr<Writer> writer);

  const std::string key_;  // the registry's key: the path made absolute
  const std::unique_ptr<Writer> writer_;
};

}  // namespace infermesh::audit
