#include "proxy/audit/audit_log.h"

#include <fcntl.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "proxy/audit/record_format.h"
#include "proxy/audit/record_queue.h"

namespace infermesh::audit {
namespace {

using namespace std::chrono_literals;

// Formatted lines the writer holds while writes fail; past it, it stops
// taking records and the queue fills, so a full disk costs drops, not memory.
constexpr std::size_t kMaxPendingBytes = 1 << 20;
constexpr auto kRetryFirst = 50ms;
constexpr auto kRetryMax = 2s;
// At stop a failing disk gets a few more tries, not forever: shutdown must end.
constexpr int kStopAttempts = 3;
constexpr auto kStopRetry = 100ms;
// Reading an existing file's last record: steps back this much at a time.
constexpr std::size_t kTailChunk = 64 << 10;

struct ChainTail {
  std::uint64_t seq = 0;
  HashHex hash = zeroHash();
};

std::string errnoText(int e) { return std::error_code(e, std::system_category()).message(); }

std::string rotatedPath(const std::string& path, std::uint32_t k) { return path + "." + std::to_string(k); }

// The last record of `path`: found = false when the file is missing or
// empty; false with `error` when the last line is not a complete record.
bool readTail(const std::string& path, ChainTail& tail, bool& found, std::string& error) {
  found = false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return true;
    error = "audit log " + path + ": cannot read: " + errnoText(errno);
    return false;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    error = "audit log " + path + ": not a regular file";
    ::close(fd);
    return false;
  }
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return true;
  }
  // Read backwards until the newline before the last line is in the buffer.
  std::string buf;
  std::uint64_t start = size;
  std::size_t line_start = std::string::npos;
  while (start > 0) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(kTailChunk, start));
    start -= n;
    std::string chunk(n, '\0');
    std::size_t got = 0;
    while (got < n) {
      const ssize_t r = ::pread(fd, chunk.data() + got, n - got, static_cast<off_t>(start + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        error = "audit log " + path + ": cannot read: " + (r < 0 ? errnoText(errno) : "file shrank");
        ::close(fd);
        return false;
      }
      got += static_cast<std::size_t>(r);
    }
    buf.insert(0, chunk);
    if (buf.back() != '\n') {
      error = "audit log " + path + ": the last line is incomplete (no newline at the end); check the file with "
              "`infermeshctl audit verify` and move it aside";
      ::close(fd);
      return false;
    }
    if (buf.size() >= 2) {
      const std::size_t nl = buf.rfind('\n', buf.size() - 2);
      if (nl != std::string::npos) {
        line_start = nl + 1;
        break;
      }
    }
  }
  ::close(fd);
  if (line_start == std::string::npos) line_start = 0;
  const std::string_view line(buf.data() + line_start, buf.size() - line_start - 1);
  const auto head = parseRecordHead(line);
  if (!head) {
    error = "audit log " + path + ": the last line is not an audit record";
    return false;
  }
  LineHasher hasher;
  tail.seq = head->seq;
  tail.hash = hasher.hash(line);
  found = true;
  return true;
}

}  // namespace

// The writer thread and everything it owns. Request threads touch only
// the queue and the atomics marked as theirs.
class AuditLog::Writer {
 public:
  Writer(const AuditLogOptions& options, int fd, std::uint64_t size, ChainTail tail)
      : path_(options.path),
        max_bytes_(options.max_bytes),
        keep_files_(options.keep_files),
        queue_(options.queue_capacity),
        fd_(fd),
        size_(size),
        tail_(tail) {
    out_.reserve(kMaxPendingBytes + 4096);
  }

  void start() {
    thread_ = std::thread([this] { run(); });
    ::pthread_setname_np(thread_.native_handle(), "audit-writer");
  }

  bool submit(std::string& fields) {
    if (stopping_.load(std::memory_order_relaxed) || !queue_.tryPush(fields)) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    // Pairs with the fence in run(): either the writer sees this record
    // before it sleeps, or this thread sees that it sleeps and wakes it.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (sleeping_.load(std::memory_order_relaxed)) {
      std::lock_guard lk(mu_);
      sleeping_.store(false, std::memory_order_relaxed);
      wake_.notify_one();
    }
    return true;
  }

  void flush() {
    std::unique_lock lk(mu_);
    const std::uint64_t target = queue_.claimed();
    if (target <= synced_pos_ || exited_) return;
    flush_target_ = std::max(flush_target_, target);
    sleeping_.store(false, std::memory_order_relaxed);
    wake_.notify_one();
    synced_.wait(lk, [&] { return synced_pos_ >= target || exited_; });
  }

  void setRotation(std::uint64_t max_bytes, std::uint32_t keep_files) {
    max_bytes_.store(max_bytes, std::memory_order_relaxed);
    keep_files_.store(keep_files, std::memory_order_relaxed);
  }

  // Idempotent: the last holder and the exit handler may both get here.
  void stop() {
    std::lock_guard s(stop_mu_);
    if (!thread_.joinable()) return;
    {
      std::lock_guard lk(mu_);
      stopping_.store(true, std::memory_order_relaxed);
      sleeping_.store(false, std::memory_order_relaxed);
    }
    wake_.notify_one();
    thread_.join();
    // Only a submit that raced the stop can have left a record behind.
    std::string late;
    while (queue_.tryPop(late)) dropped_.fetch_add(1, std::memory_order_relaxed);
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  std::atomic<std::uint64_t> written_{0};
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<std::uint64_t> write_errors_{0};
  std::atomic<std::uint64_t> rotations_{0};

 private:
  void run() {
    std::string fields;
    auto retry = kRetryFirst;
    int stop_failures = 0;
    for (;;) {
      while (out_.size() - out_off_ < kMaxPendingBytes && queue_.tryPop(fields)) {
        append(fields);
        ++popped_;
      }
      if (!writePending()) {
        const bool stopping = stopping_.load(std::memory_order_relaxed);
        if (stopping && ++stop_failures >= kStopAttempts) {
          dropUnwritten();
          break;
        }
        std::unique_lock lk(mu_);
        // Wakes early only for the stop itself, so stop's retries are spaced.
        wake_.wait_for(lk, stopping ? kStopRetry : retry,
                       [&] { return !stopping && stopping_.load(std::memory_order_relaxed); });
        retry = std::min<std::chrono::milliseconds>(retry * 2, kRetryMax);
        continue;
      }
      retry = kRetryFirst;
      if (queue_.readable()) continue;
      syncIfAsked();
      sleeping_.store(true, std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (queue_.readable()) {
        sleeping_.store(false, std::memory_order_relaxed);
        continue;
      }
      std::unique_lock lk(mu_);
      if (stopping_.load(std::memory_order_relaxed)) break;
      wake_.wait(lk, [&] {
        return !sleeping_.load(std::memory_order_relaxed) || stopping_.load(std::memory_order_relaxed);
      });
      sleeping_.store(false, std::memory_order_relaxed);
    }
    if (fd_ >= 0) ::fdatasync(fd_);
    std::lock_guard lk(mu_);
    synced_pos_ = popped_;
    exited_ = true;
    synced_.notify_all();
  }

  // Formats one record into out_ and advances the chain.
  void append(const std::string& fields) {
    const std::size_t start = out_.size();
    char seq[24];
    const auto [end, ec] = std::to_chars(seq, seq + sizeof seq, tail_.seq + 1);
    out_ += "{\"seq\":";
    out_.append(seq, end);
    out_ += ",\"prev\":\"";
    out_.append(tail_.hash.data(), tail_.hash.size());
    out_ += '"';
    if (!fields.empty()) {
      out_ += ',';
      const std::size_t f = out_.size();
      out_ += fields;
      // A raw line break would split the record. Valid JSON has them only
      // as whitespace between tokens, where a space means the same.
      for (std::size_t i = f; i < out_.size(); ++i)
        if (out_[i] == '\n' || out_[i] == '\r') out_[i] = ' ';
    }
    out_ += '}';
    tail_.hash = hasher_.hash(std::string_view(out_).substr(start));
    ++tail_.seq;
    out_ += '\n';
  }

  // Writes out_ through, rotating on line boundaries; false when something
  // failed and the rest must be retried later.
  bool writePending() {
    bool over_limit = false;  // the file could not be moved aside: keep writing to it
    while (out_off_ < out_.size()) {
      if (fd_ < 0 && !reopen()) return false;
      if (truncate_first_) {
        if (::ftruncate(fd_, static_cast<off_t>(size_)) != 0) {
          countError("truncate after a short write", errno);
          return false;
        }
        truncate_first_ = false;
      }
      const std::uint64_t max = max_bytes_.load(std::memory_order_relaxed);
      std::size_t take = 0;
      std::uint64_t lines = 0;
      while (out_off_ + take < out_.size()) {
        const char* begin = out_.data() + out_off_ + take;
        const auto* nl = static_cast<const char*>(std::memchr(begin, '\n', out_.size() - out_off_ - take));
        const std::size_t len = static_cast<std::size_t>(nl - begin) + 1;
        if (!over_limit && size_ + take > 0 && size_ + take + len > max) break;
        take += len;
        ++lines;
      }
      if (take == 0) {
        over_limit = !rotate();
        continue;
      }
      ssize_t n;
      do n = ::write(fd_, out_.data() + out_off_, take);
      while (n < 0 && errno == EINTR);
      if (n != static_cast<ssize_t>(take)) {
        // A partial line would break the chain for good: cut it off again.
        if (n > 0) truncate_first_ = ::ftruncate(fd_, static_cast<off_t>(size_)) != 0;
        countError(n < 0 ? "write" : "write (short)", n < 0 ? errno : 0);
        return false;
      }
      size_ += take;
      out_off_ += take;
      written_.fetch_add(lines, std::memory_order_relaxed);
      if (error_logged_) {
        spdlog::info("audit log {}: writing again", path_);
        error_logged_ = false;
      }
    }
    out_.clear();
    out_off_ = 0;
    return true;
  }

  // path -> path.1 -> ... -> path.keep_files. False when the full file
  // stays where it is (the writer then goes on appending to it).
  bool rotate() {
    ::fdatasync(fd_);
    const std::uint32_t keep = keep_files_.load(std::memory_order_relaxed);
    if (keep == 0) {
      if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
        countError("remove the full file", errno);
        return false;
      }
    } else {
      for (std::uint32_t k = keep - 1; k >= 1; --k)
        if (::rename(rotatedPath(path_, k).c_str(), rotatedPath(path_, k + 1).c_str()) != 0 && errno != ENOENT) {
          countError("rotate " + rotatedPath(path_, k), errno);
          return false;
        }
      if (::rename(path_.c_str(), rotatedPath(path_, 1).c_str()) != 0) {
        countError("rotate", errno);
        return false;
      }
    }
    ::close(fd_);
    fd_ = -1;
    size_ = 0;
    rotations_.fetch_add(1, std::memory_order_relaxed);
    reopen();  // on failure fd_ stays -1 and writePending retries it
    return true;
  }

  bool reopen() {
    fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd_ < 0) {
      countError("open", errno);
      return false;
    }
    struct stat st {};
    size_ = ::fstat(fd_, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
    return true;
  }

  void syncIfAsked() {
    {
      std::lock_guard lk(mu_);
      if (flush_target_ <= synced_pos_) return;
    }
    if (popped_ > fsynced_ && fd_ >= 0 && ::fdatasync(fd_) != 0) countError("fdatasync", errno);
    fsynced_ = popped_;
    std::lock_guard lk(mu_);
    synced_pos_ = popped_;
    synced_.notify_all();
  }

  // Stop gave up on a failing disk: what is left is counted as dropped.
  void dropUnwritten() {
    std::uint64_t lost = static_cast<std::uint64_t>(std::count(out_.begin() + out_off_, out_.end(), '\n'));
    out_.clear();
    out_off_ = 0;
    std::string rest;
    while (queue_.tryPop(rest)) {
      ++lost;
      ++popped_;
    }
    dropped_.fetch_add(lost, std::memory_order_relaxed);
    std::fprintf(stderr, "audit log %s: stopped with %llu records unwritten\n", path_.c_str(),
                 static_cast<unsigned long long>(lost));
  }

  void countError(const std::string& what, int err) {
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    // One line per outage, not one per retry.
    if (!error_logged_)
      spdlog::error("audit log {}: {} failed{}{}; retrying (records wait, and drop once the queue is full)", path_,
                    what, err != 0 ? ": " : "", err != 0 ? errnoText(err) : "");
    error_logged_ = true;
  }

  const std::string path_;
  std::atomic<std::uint64_t> max_bytes_;
  std::atomic<std::uint32_t> keep_files_;
  RecordQueue queue_;

  // Request-thread side.
  std::atomic<bool> stopping_{false};
  std::atomic<bool> sleeping_{false};

  // The writer's own. The chain advances as lines are formatted, and those
  // lines stay in out_ until a write succeeds, so a failed write is retried
  // with the same bytes and the chain never skips.
  int fd_;
  std::uint64_t size_;
  ChainTail tail_;
  LineHasher hasher_;
  std::string out_;
  std::size_t out_off_ = 0;
  bool truncate_first_ = false;
  std::uint64_t popped_ = 0;
  std::uint64_t fsynced_ = 0;
  bool error_logged_ = false;

  std::mutex mu_;
  std::condition_variable wake_;    // the writer: records, flush requests, stop
  std::condition_variable synced_;  // flush() callers
  std::uint64_t flush_target_ = 0;  // queue positions flush() callers wait for
  std::uint64_t synced_pos_ = 0;    // queue positions written and fdatasync'ed
  bool exited_ = false;

  std::mutex stop_mu_;
  std::thread thread_;
};

// Path -> the live log. Two writers on one file would fork the chain, so a
// path whose last holder just let go is reopened only after that writer is
// done.
class AuditLog::Registry {
 public:
  // Never destroyed: a log may be released during static destruction.
  static Registry& get() {
    static Registry* r = new Registry;
    return *r;
  }

  struct Entry {
    std::weak_ptr<AuditLog> log;
    const AuditLog* raw = nullptr;
    AuditLogOptions options;
  };

  std::mutex mu;
  std::condition_variable gone;
  std::map<std::string, Entry> entries;
  bool exit_hook = false;

  // Logs somebody still holds at exit are drained too.
  static void stopAll() {
    auto& reg = get();
    std::vector<std::shared_ptr<AuditLog>> live;
    {
      std::lock_guard lk(reg.mu);
      for (auto& [key, e] : reg.entries)
        if (auto l = e.log.lock()) live.push_back(std::move(l));
    }
    // Outside the lock: releasing the last holder here runs ~AuditLog.
    for (auto& l : live) l->writer_->stop();
  }
};

AuditLog::AuditLog(std::string key, std::unique_ptr<Writer> writer) : key_(std::move(key)), writer_(std::move(writer)) {}

AuditLog::~AuditLog() {
  writer_->stop();
  auto& reg = Registry::get();
  std::lock_guard lk(reg.mu);
  if (auto it = reg.entries.find(key_); it != reg.entries.end() && it->second.raw == this) reg.entries.erase(it);
  reg.gone.notify_all();
}

std::shared_ptr<AuditLog> AuditLog::open(const AuditLogOptions& options, std::string& error) {
  if (options.path.empty()) {
    error = "audit log: no path";
    return nullptr;
  }
  if (options.queue_capacity < 2) {
    error = "audit log " + options.path + ": queue_capacity must be at least 2";
    return nullptr;
  }
  std::error_code ec;
  std::string key = std::filesystem::weakly_canonical(options.path, ec).string();
  if (ec) key = options.path;

  auto& reg = Registry::get();
  std::unique_lock lk(reg.mu);
  if (!reg.exit_hook) {
    // spdlog's registry is created first so that it is destroyed after the
    // exit handler has run (exit order is the reverse of creation).
    spdlog::default_logger_raw();
    std::atexit(&Registry::stopAll);
    reg.exit_hook = true;
  }
  for (;;) {
    auto it = reg.entries.find(key);
    if (it == reg.entries.end()) break;
    if (auto live = it->second.log.lock()) {
      auto& known = it->second.options;
      if (options.queue_capacity != known.queue_capacity)
        spdlog::warn("audit log {}: already open with a queue of {} records; keeping it", options.path,
                     known.queue_capacity);
      if (options.max_bytes != known.max_bytes || options.keep_files != known.keep_files) {
        live->writer_->setRotation(options.max_bytes, options.keep_files);
        known.max_bytes = options.max_bytes;
        known.keep_files = options.keep_files;
      }
      return live;
    }
    reg.gone.wait(lk);
  }

  const int fd = ::open(options.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    error = "audit log " + options.path + ": cannot open: " + errnoText(errno);
    return nullptr;
  }
  ChainTail tail;
  bool found = false;
  // An empty file right after a rotation continues the rotated one.
  if (!readTail(options.path, tail, found, error) ||
      (!found && !readTail(rotatedPath(options.path, 1), tail, found, error))) {
    ::close(fd);
    return nullptr;
  }
  struct stat st {};
  const std::uint64_t size = ::fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  auto writer = std::make_unique<Writer>(options, fd, size, tail);
  Writer* w = writer.get();
  std::shared_ptr<AuditLog> log(new AuditLog(key, std::move(writer)));
  reg.entries[key] = Registry::Entry{log, log.get(), options};
  w->start();
  return log;
}

bool AuditLog::submit(std::string fields) { return writer_->submit(fields); }
void AuditLog::flush() { writer_->flush(); }
std::uint64_t AuditLog::written() const { return writer_->written_.load(std::memory_order_relaxed); }
std::uint64_t AuditLog::dropped() const { return writer_->dropped_.load(std::memory_order_relaxed); }
std::uint64_t AuditLog::writeErrors() const { return writer_->write_errors_.load(std::memory_order_relaxed); }
std::uint64_t AuditLog::rotations() const { return writer_->rotations_.load(std::memory_order_relaxed); }

}  // namespace infermesh::audit
