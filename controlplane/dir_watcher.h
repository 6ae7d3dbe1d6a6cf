#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <thread>

namespace infermesh::controlplane {

// Watches a config directory with inotify and calls `on_change` (on the
// watcher's thread) once the directory has been quiet for `debounce`, so a
// burst of writes (an editor's save, a ConfigMap's ..data symlink swap)
// becomes one reload.
class DirWatcher {
 public:
  DirWatcher(std::string dir, std::chrono::milliseconds debounce, std::function<void()> on_change);
  ~DirWatcher();
  DirWatcher(const DirWatcher&) = delete;
  DirWatcher& operator=(const DirWatcher&) = delete;

 private:
  void run();

  std::string dir_;
  std::chrono::milliseconds debounce_;
  std::function<void()> on_change_;
  int inotify_fd_ = -1;
  int stop_fd_ = -1;  // eventfd that ends the thread
  std::thread thread_;
};

}  // namespace infermesh::controlplane
