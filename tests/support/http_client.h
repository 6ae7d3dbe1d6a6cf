#pragma once

#include <chrono>
#include <map>
#include <string>

namespace infermesh::testing {

struct HttpResponse {
  int status = 0;  // 0: no (complete) response head
  std::map<std::string, std::string> headers;  // lower-case names; repeats comma-joined
  std::string body;
  bool complete = false;  // the message ended as its framing says
  std::string error;
};

// A blocking client connection to 127.0.0.1:port, for tests only.
class HttpConnection {
 public:
  explicit HttpConnection(int port);
  ~HttpConnection();
  bool connected() const { return fd_ >= 0; }
  bool sendRaw(const std::string& bytes);
  // Reads one response (Beast parser over the received bytes).
  HttpResponse read(std::chrono::milliseconds timeout = std::chrono::seconds(10), bool head_request = false);
  // Whatever arrives next, or "" on timeout / close.
  std::string readSome(std::chrono::milliseconds timeout);
  // True if the peer closes the connection within the timeout.
  bool closedByPeer(std::chrono::milliseconds timeout);

 private:
  int fd_ = -1;
  std::string buffered_;
};

HttpResponse httpRequest(int port, const std::string& method, const std::string& target, const std::string& body = "",
                         const std::map<std::string, std::string>& headers = {},
                         std::chrono::milliseconds timeout = std::chrono::seconds(10));

// POST /v1/chat/completions with a one-message chat body.
std::string chatBody(const std::string& model, bool stream);

// "GET /path" against the admin listener; body only.
std::string httpGetBody(int port, const std::string& target);

}  // namespace infermesh::testing
