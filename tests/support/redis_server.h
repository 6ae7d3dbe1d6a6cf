#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tests/support/process.h"

namespace infermesh::testing {

// A real redis-server on 127.0.0.1 for tests: a free port, no persistence
// (--save "" --appendonly no) unless `persistent` (an append-only file
// synced on every write, so a restart after stop() keeps the data), its
// files in a temp dir. The constructor
// returns once the server answers (PING, polled with a bound) and throws
// if it does not. The destructor kills it and removes the dir.
class RedisServer {
 public:
  explicit RedisServer(std::string password = "", bool persistent = false);
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  int port() const { return port_; }
  const std::string& password() const { return password_; }

  // SIGKILL, like a crash (the data is gone unless persistent).
  void stop();
  // A fresh server on the same port; returns once it answers.
  void restart();
  // SIGSTOP / SIGCONT: a server that accepts connections and answers nothing.
  void pause();
  void resume();

  // True when it answers PING (a NOAUTH error counts as an answer).
  bool ping() const;
  // Runs one command on a new connection (AUTH first when there is a
  // password). The reply as text: a status or bulk string as is, an
  // integer in decimal, an error with its leading "-", nil as "(nil)", an
  // array as its elements joined by spaces; "" when there is no reply.
  std::string command(const std::vector<std::string>& args) const;

 private:
  bool launch(int port);

  std::string password_;
  bool persistent_ = false;
  std::string binary_;
  TempDir dir_;
  std::unique_ptr<Process> process_;
  int port_ = 0;
};

}  // namespace infermesh::testing
