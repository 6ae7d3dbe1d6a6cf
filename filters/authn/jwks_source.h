#pragma once

// Where an issuer's keys come from: a JWKS file or an https:// URL, loaded
// and refreshed on a thread of its own, never on the request path. A load
// that fails keeps the last good keys (docs/jwt.md).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "filters/authn/jwt.h"

namespace infermesh::authn {

struct JwksSpec {
  std::string file;      // a JWKS file, re-read when it changes (checked every min(refresh, 1 s)) ...
  std::string uri;       // ... or an https:// URL
  std::string ca_file;   // trust bundle for the URL's server; empty: the system default
  std::chrono::milliseconds refresh{300000};     // periodic refetch
  std::chrono::milliseconds min_refetch{5000};   // unknown-kid refetches at most this often
  std::chrono::milliseconds timeout{5000};       // resolve + connect + TLS + response
  bool operator==(const JwksSpec&) const = default;
};

// For config validation: exactly one of file and uri, the URI https:// with
// a host, positive durations. The error names the field.
bool validateJwksSpec(const JwksSpec& spec, std::string& error);

class JwksSource {
 public:
  // Starts loading: a file is read before this returns, a URL is fetched on
  // the source's thread. An invalid spec gives a source that never loads and
  // says why in lastError().
  explicit JwksSource(JwksSpec spec);
  ~JwksSource();
  JwksSource(const JwksSource&) = delete;
  JwksSource& operator=(const JwksSource&) = delete;

  // The current keys; null until the first good load. One atomic load, no
  // mutex (libstdc++ guards the pointer with a spin bit for a few instructions).
  std::shared_ptr<const JwkSet> keys() const { return keys_.load(std::memory_order_acquire); }
  // A token named a kid the keys lack: ask for a refetch (a file: a re-read),
  // at most once per min_refetch. Never waits for it.
  void onUnknownKid();
  // Blocks up to `limit` for the first load to finish; true when keys are loaded.
  bool waitReady(std::chrono::milliseconds limit);

  const JwksSpec& spec() const { return spec_; }
  std::uint64_t fetchesOk() const { return fetches_ok_.load(std::memory_order_relaxed); }
  std::uint64_t fetchesFailed() const { return fetches_failed_.load(std::memory_order_relaxed); }
  std::uint64_t unknownKidRefetches() const { return unknown_kid_refetches_.load(std::memory_order_relaxed); }
  // The last load's error, "" after a good one. For logs; locks.
  std::string lastError() const;

 private:
  struct FileStamp {
    std::int64_t mtime_ns = -1, size = -1, inode = -1;
    bool operator==(const FileStamp&) const = default;
  };

  void run();
  // One load attempt; true on a good document.
  bool loadFile(bool forced);
  bool fetchUri();
  // Installs a new document's keys, or records why it was refused.
  bool accept(const std::string& body);
  void fail(std::string error);
  std::string name() const;

  const JwksSpec spec_;
  std::atomic<std::shared_ptr<const JwkSet>> keys_;
  std::atomic<std::uint64_t> fetches_ok_{0}, fetches_failed_{0}, unknown_kid_refetches_{0};
  // steady_clock nanoseconds before which another unknown-kid refetch is refused.
  std::atomic<std::int64_t> next_unknown_kid_{0};
  std::atomic<bool> stopping_{false};

  // Written on destruction: the source's thread polls it next to its socket,
  // so a fetch in progress stops at once.
  int wake_fd_ = -1;

  mutable std::mutex mu_;  // guards what follows; never held during a load
  std::condition_variable cv_;        // the source's thread: stop or refetch
  std::condition_variable ready_cv_;  // waitReady: the first load is done
  bool refetch_requested_ = false;
  bool first_done_ = false;
  bool failing_ = false;  // for logging once per state change
  std::string last_error_;
  std::string last_body_;  // an unchanged document is not parsed again
  FileStamp stamp_;
  std::thread thread_;
};

// One source per distinct spec, shared while anything holds it; a source
// stops its thread when the last holder lets go.
class JwksSources {
 public:
  static JwksSources& instance();
  std::shared_ptr<JwksSource> get(const JwksSpec& spec);

 private:
  std::mutex mu_;
  std::vector<std::pair<JwksSpec, std::weak_ptr<JwksSource>>> sources_;
};

}  // namespace infermesh::authn
