#pragma once

#include <atomic>
#include <memory>
#include <string>

namespace infermesh::upstream {

// A secret read from a file (a mounted Kubernetes Secret, say) and re-read
// when the file changes, checked once a second off the request path. The
// value never enters config, dumps or logs.
class CredentialFile {
 public:
  // The current value (trailing newline removed); never null once open()
  // succeeded. Lock-free for the request path.
  std::shared_ptr<const std::string> value() const { return value_.load(std::memory_order_acquire); }
  const std::string& path() const { return path_; }

  // One object per path, shared while anything holds it. Null with `error`
  // when the file cannot be read or is empty.
  static std::shared_ptr<CredentialFile> open(const std::string& path, std::string& error);

  explicit CredentialFile(std::string path) : path_(std::move(path)) {}
  // Re-reads the file if it changed; keeps the old value when the new one
  // cannot be read. Returns whether the value changed.
  bool refresh();

 private:
  std::string path_;
  std::atomic<std::shared_ptr<const std::string>> value_;
  std::int64_t mtime_ns_ = -1;
  std::uint64_t size_ = 0;
};

}  // namespace infermesh::upstream
