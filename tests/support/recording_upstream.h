#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace infermesh::testing {

// Appends what arrives on a socket to `buf` (waiting until something does);
// false on close, error or once `stopping` is set.
bool readMore(int fd, std::string& buf, const std::atomic<bool>& stopping);

// A model server stand-in that records exactly what reaches it, for tests
// of what the proxy forwards. HTTP/1.1 (keep-alive, Content-Length bodies)
// or cleartext HTTP/2 (prior knowledge); every request gets a 200 with a
// small chat completion, or for gRPC an empty message with grpc-status 0.
// Listens on 127.0.0.1 on a free port; the destructor stops it.
class RecordingUpstream {
 public:
  enum class Protocol { Http1, Http2 };
  struct Request {
    std::string head;  // HTTP/1.1: the request line and header lines, byte for byte
    std::string method, target;
    std::vector<std::pair<std::string, std::string>> headers;  // as received, in order
    std::string body;
    // The value of the first header named `name` (exact, lower-case), or "".
    std::string header(const std::string& name) const;
    int count(const std::string& name) const;
  };

  explicit RecordingUpstream(Protocol protocol = Protocol::Http1);
  ~RecordingUpstream();
  RecordingUpstream(const RecordingUpstream&) = delete;
  RecordingUpstream& operator=(const RecordingUpstream&) = delete;

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // Waits (bounded) until `n` requests have arrived; then returns them all.
  std::vector<Request> waitFor(std::size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  std::size_t received();

 private:
  void acceptLoop();
  void serveHttp1(int fd);
  void serveHttp2(int fd);
  void record(Request r);

  Protocol protocol_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Request> requests_;
  std::vector<std::thread> connections_;
  std::vector<int> fds_;
};

}  // namespace infermesh::testing
