#pragma once

#include <chrono>
#include <functional>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace infermesh::config {
struct Snapshot;
struct ListenerConfig;
struct RouteConfig;
struct ModelConfig;
}  // namespace infermesh::config

namespace infermesh::proxy {
class Worker;
class DownstreamStream;
}  // namespace infermesh::proxy

namespace infermesh::filter {

// Header fields in arrival order; names compare case-insensitively.
class HeaderList {
 public:
  void add(std::string name, std::string value) { fields_.emplace_back(std::move(name), std::move(value)); }
  // The first value of `name`, or nullopt.
  std::optional<std::string_view> get(std::string_view name) const;
  void set(std::string_view name, std::string value);
  void remove(std::string_view name);
  // Removes the fields whose name satisfies `pred`; returns how many.
  template <typename Pred>
  std::size_t removeIf(Pred pred) {
    return std::erase_if(fields_, [&](const auto& f) { return pred(std::string_view(f.first)); });
  }
  const std::vector<std::pair<std::string, std::string>>& fields() const { return fields_; }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

bool equalsIgnoreCase(std::string_view a, std::string_view b);

struct RequestHead {
  std::string method;
  std::string target;  // path and query as received
  std::string_view path() const { return std::string_view(target).substr(0, target.find('?')); }
  HeaderList headers;
};

struct ResponseHead {
  unsigned status = 0;
  std::string reason;
  HeaderList headers;
};

// An answer produced by the proxy itself (OpenAI error shape).
struct LocalReply {
  unsigned status = 0;
  std::string message;
  std::string type;  // invalid_request_error, upstream_error ...
  std::string code;  // machine-readable reason, also the access log's "reason"
  std::vector<std::pair<std::string, std::string>> extra_headers;
};

// Where an error came from, for logs and metrics.
enum class ErrorSource { None, Downstream, Upstream, Internal };

// Everything one request/response exchange carries through the filter chain.
// Owned by the connection; lives until the log hooks have run.
struct StreamContext {
  // Config pinned at stream start: the stream finishes on it even if a
  // reload happens meanwhile.
  std::shared_ptr<const config::Snapshot> snapshot;
  const config::ListenerConfig* listener = nullptr;
  proxy::Worker* worker = nullptr;
  proxy::DownstreamStream* downstream = nullptr;

  RequestHead request;
  std::string request_id;
  std::string client_address;
  std::string_view protocol = "HTTP/1.1";  // as received
  std::string peer_identity;  // the client certificate's SPIFFE ID (mTLS), else empty
  std::chrono::steady_clock::time_point start;

  // Filled by the router once the body has been read.
  std::string model;  // as named by the client
  bool stream = false;
  const config::RouteConfig* route = nullptr;
  const config::ModelConfig* target_model = nullptr;
  std::string upstream_address;
  int upstream_attempts = 0;

  // Response side, for log hooks.
  unsigned response_status = 0;
  std::uint64_t request_body_bytes = 0;
  std::uint64_t response_body_bytes = 0;
  std::optional<std::chrono::steady_clock::time_point> first_byte_at;
  ErrorSource error_source = ErrorSource::None;
  std::string error_reason;  // empty when the stream ended cleanly

  // Set by the terminal filter while it works upstream; the connection
  // calls it when the client goes away, to cancel that work.
  std::function<void()> on_downstream_gone;

  // Set by sendLocalReply(); the filter manager stops and answers with it.
  std::optional<LocalReply> local_reply;

  void sendLocalReply(unsigned status, std::string message, std::string type, std::string code) {
    local_reply = LocalReply{status, std::move(message), std::move(type), std::move(code), {}};
  }
};

}  // namespace infermesh::filter
