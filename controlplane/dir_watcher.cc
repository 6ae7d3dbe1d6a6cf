#include "controlplane/dir_watcher.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

namespace infermesh::controlplane {

DirWatcher::DirWatcher(std::string dir, std::chrono::milliseconds debounce, std::function<void()> on_change)
    : dir_(std::move(dir)), debounce_(debounce), on_change_(std::move(on_change)) {
  inotify_fd_ = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (inotify_fd_ < 0 || stop_fd_ < 0 ||
      ::inotify_add_watch(inotify_fd_, dir_.c_str(),
                          IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM |
                              IN_ATTRIB) < 0)
    throw std::runtime_error("cannot watch " + dir_);
  thread_ = std::thread([this] { run(); });
}

DirWatcher::~DirWatcher() {
  std::uint64_t one = 1;
  (void)::write(stop_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  ::close(inotify_fd_);
  ::close(stop_fd_);
}

void DirWatcher::run() {
  bool pending = false;
  auto quiet_at = std::chrono::steady_clock::now();
  for (;;) {
    pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    int timeout = -1;
    if (pending) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(quiet_at - std::chrono::steady_clock::now());
      timeout = static_cast<int>(std::max<long>(0, left.count()));
    }
    int n = ::poll(fds, 2, timeout);
    if (n < 0 && errno != EINTR) return;
    if (fds[1].revents) return;
    if (n > 0 && fds[0].revents) {
      alignas(inotify_event) char buf[8192];
      while (::read(inotify_fd_, buf, sizeof buf) > 0) {
      }
      pending = true;
      quiet_at = std::chrono::steady_clock::now() + debounce_;
      continue;
    }
    if (pending && std::chrono::steady_clock::now() >= quiet_at) {
      pending = false;
      on_change_();
    }
  }
}

}  // namespace infermesh::controlplane
