#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace infermesh::testing {

// Polls `pred` every `step` until it holds or `limit` passes; its last
// answer. Tests wait on conditions this way, never on fixed sleeps.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::milliseconds(5000),
                std::chrono::milliseconds step = std::chrono::milliseconds(20)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(step);
  }
  return pred();
}

// A child process with its stdout on a pipe (for the "bound to ip:port"
// lines) and stderr in a file. The destructor kills and reaps it.
class Process {
 public:
  static std::unique_ptr<Process> start(const std::vector<std::string>& argv, const std::string& stderr_path);
  ~Process();

  // The rest of the first stdout line starting with `prefix`, whenever it was
  // printed (lines are kept, so the order of waits does not matter); empty
  // on timeout.
  std::string waitForLine(const std::string& prefix, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void signal(int sig);
  // Exit status, or -1 if it did not exit in time (or died by a signal).
  int wait(std::chrono::milliseconds timeout);
  bool running();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string pending_;
  std::vector<std::string> lines_;
  bool reaped_ = false;
  int status_ = 0;
};

// A shell command's stdout and exit status (-1 when it did not exit).
struct CommandResult {
  std::string out;
  int status = -1;
};
CommandResult runCommand(const std::string& command);

// "127.0.0.1:1234" -> 1234
int portOf(const std::string& address);

// A port on 127.0.0.1 that was free a moment ago, for servers that cannot
// bind port 0 and report it (redis-server, Prometheus).
int freePort();

// A fresh directory under /tmp, removed by the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  void write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

}  // namespace infermesh::testing
