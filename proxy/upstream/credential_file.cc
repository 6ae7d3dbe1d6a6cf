#include "proxy/upstream/credential_file.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

namespace infermesh::upstream {
namespace {

bool readSecret(const std::string& path, std::string& out, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = "cannot read " + path;
    return false;
  }
  std::ostringstream text;
  text << in.rdbuf();
  out = text.str();
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  if (out.empty()) {
    error = path + " is empty";
    return false;
  }
  if (out.find_first_of("\r\n") != std::string::npos) {
    error = path + " holds more than one line";
    return false;
  }
  return true;
}

// Files in use and the thread that re-reads them once a second.
class Watcher {
 public:
  static Watcher& instance() {
    static Watcher w;
    return w;
  }
  std::shared_ptr<CredentialFile> open(const std::string& path, std::string& error) {
    std::lock_guard lock(mu_);
    if (auto it = files_.find(path); it != files_.end())
      if (auto f = it->second.lock()) return f;
    auto f = std::make_shared<CredentialFile>(path);
    std::string value;
    if (!readSecret(path, value, error)) return nullptr;
    f->refresh();
    files_[path] = f;
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
    return f;
  }
  ~Watcher() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      cv_.wait_for(lock, std::chrono::seconds(1));
      for (auto it = files_.begin(); it != files_.end();) {
        auto f = it->second.lock();
        if (!f) {
          it = files_.erase(it);
          continue;
        }
        if (f->refresh()) spdlog::info("upstream credential {} reloaded", f->path());
        ++it;
      }
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::weak_ptr<CredentialFile>> files_;
  std::thread thread_;
  bool stop_ = false;
};

}  // namespace

std::shared_ptr<CredentialFile> CredentialFile::open(const std::string& path, std::string& error) {
  return Watcher::instance().open(path, error);
}

bool CredentialFile::refresh() {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) return false;
  const std::int64_t mtime = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  if (mtime == mtime_ns_ && static_cast<std::uint64_t>(st.st_size) == size_) return false;
  std::string value, error;
  if (!readSecret(path_, value, error)) {
    spdlog::warn("upstream credential: {}; keeping the previous value", error);
    return false;
  }
  mtime_ns_ = mtime;
  size_ = static_cast<std::uint64_t>(st.st_size);
  value_.store(std::make_shared<const std::string>(std::move(value)), std::memory_order_release);
  return true;
}

}  // namespace infermesh::upstream
