#include "tests/support/redis_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <stdexcept>

namespace infermesh::testing {
namespace {

class Connection {
 public:
  explicit Connection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return;
    timeval tv{2, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }

  bool send(const std::vector<std::string>& args) {
    std::string out = "*" + std::to_string(args.size()) + "\r\n";
    for (const auto& a : args) out += "$" + std::to_string(a.size()) + "\r\n" + a + "\r\n";
    std::size_t done = 0;
    while (done < out.size()) {
      ssize_t n = ::send(fd_, out.data() + done, out.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

  // One RESP reply as text (see RedisServer::command); false on EOF/timeout.
  bool reply(std::string& text) {
    std::string line;
    if (!readLine(line) || line.empty()) return false;
    const char type = line[0];
    const std::string rest = line.substr(1);
    switch (type) {
      case '+':
      case ':':
        text = rest;
        return true;
      case '-':
        text = line;
        return true;
      case '$': {
        const long n = std::atol(rest.c_str());
        if (n < 0) {
          text = "(nil)";
          return true;
        }
        std::string data;
        if (!readBytes(static_cast<std::size_t>(n) + 2, data)) return false;
        text = data.substr(0, static_cast<std::size_t>(n));
        return true;
      }
      case '*': {
        const long n = std::atol(rest.c_str());
        if (n < 0) {
          text = "(nil)";
          return true;
        }
        text.clear();
        for (long i = 0; i < n; ++i) {
          std::string element;
          if (!reply(element)) return false;
          if (i > 0) text += ' ';
          text += element;
        }
        return true;
      }
      default:
        return false;
    }
  }

 private:
  bool fill() {
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    buffer_.append(buf, static_cast<std::size_t>(n));
    return true;
  }
  bool readLine(std::string& line) {
    std::size_t pos;
    while ((pos = buffer_.find("\r\n")) == std::string::npos)
      if (!fill()) return false;
    line = buffer_.substr(0, pos);
    buffer_.erase(0, pos + 2);
    return true;
  }
  bool readBytes(std::size_t n, std::string& out) {
    while (buffer_.size() < n)
      if (!fill()) return false;
    out = buffer_.substr(0, n);
    buffer_.erase(0, n);
    return true;
  }

  int fd_ = -1;
  std::string buffer_;
};

}  // namespace

RedisServer::RedisServer(std::string password, bool persistent)
    : password_(std::move(password)), persistent_(persistent) {
  std::string path = runCommand("command -v redis-server").out;
  while (!path.empty() && (path.back() == '\n' || path.back() == '\r')) path.pop_back();
  if (path.empty()) throw std::runtime_error("redis-server not found (deploy/install-deps.sh)");
  binary_ = path;
  for (int attempt = 0; attempt < 10; ++attempt)
    if (launch(freePort())) return;  // a lost race: a server that exits at once
  throw std::runtime_error("redis-server did not start; see " + dir_.path() + "/redis.log");
}

RedisServer::~RedisServer() {
  if (process_) process_->signal(SIGCONT);
  process_.reset();  // kills and reaps
}

bool RedisServer::launch(int port) {
  std::vector<std::string> argv = {binary_,      "--port",      std::to_string(port),
                                   "--bind",     "127.0.0.1",   "--save",
                                   "",           "--appendonly", persistent_ ? "yes" : "no",
                                   "--dir",      dir_.path(),   "--logfile",
                                   dir_.path() + "/redis.log",  "--daemonize",
                                   "no"};
  if (persistent_) {  // every write on disk before it is answered: a kill loses nothing
    argv.push_back("--appendfsync");
    argv.push_back("always");
  }
  if (!password_.empty()) {
    argv.push_back("--requirepass");
    argv.push_back(password_);
  }
  process_ = Process::start(argv, dir_.path() + "/stderr.log");
  port_ = port;
  // Up when it answers; a server that exits (port taken) is a failed launch.
  const bool up = eventually([&] { return !process_->running() || ping(); }, std::chrono::seconds(10),
                             std::chrono::milliseconds(5)) &&
                  process_->running();
  if (!up) process_.reset();
  return up;
}

void RedisServer::stop() {
  if (!process_) return;
  process_->signal(SIGCONT);
  process_->signal(SIGKILL);
  process_->wait(std::chrono::seconds(5));
  process_.reset();
}

void RedisServer::restart() {
  stop();
  // The port was just released; another process could take it meanwhile,
  // so a few tries on the same port (a failed one lasts until that server
  // has exited).
  for (int attempt = 0; attempt < 20; ++attempt)
    if (launch(port_)) return;
  throw std::runtime_error("redis-server did not restart on port " + std::to_string(port_));
}

void RedisServer::pause() {
  if (process_) process_->signal(SIGSTOP);
}

void RedisServer::resume() {
  if (process_) process_->signal(SIGCONT);
}

bool RedisServer::ping() const {
  Connection c(port_);
  std::string text;
  if (!c.ok() || !c.send({"PING"}) || !c.reply(text)) return false;
  return text == "PONG" || text.rfind("-NOAUTH", 0) == 0;
}

std::string RedisServer::command(const std::vector<std::string>& args) const {
  Connection c(port_);
  std::string text;
  if (!c.ok()) return {};
  if (!password_.empty() && (!c.send({"AUTH", password_}) || !c.reply(text))) return {};
  if (!c.send(args) || !c.reply(text)) return {};
  return text;
}

}  // namespace infermesh::testing
