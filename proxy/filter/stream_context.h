#pragma once

#include <array>
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
  // The body's length when known (the codec frames it; HTTP/1.1 uses
  // chunked otherwise). A response filter that changes the body's length
  // clears it.
  std::optional<std::uint64_t> content_length;
};

// An answer produced by the proxy itself, written in the request's protocol
// (HTTP/1.1, HTTP/2; for gRPC a trailers-only status). By default the body
// is the OpenAI error shape built from message, type and code; a filter may
// give its own body, or a stream of chunks (SSE events, say) instead.
struct LocalReply {
  unsigned status = 0;
  std::string message;
  std::string type;  // invalid_request_error, upstream_error ...
  std::string code;  // machine-readable reason, also the access log's "reason"
  std::vector<std::pair<std::string, std::string>> extra_headers;
  std::optional<std::string> body;  // replaces the error JSON; needs content_type
  std::string content_type;
  // A streamed answer: each chunk is written (and flushed) on its own, the
  // response ends after the last. Takes precedence over `body`.
  std::vector<std::string> chunks;
};

// One piece of a body as the filters see it: a view of bytes the proxy
// already holds, until a filter edits it (the first edit copies once).
class BodyChunk {
 public:
  BodyChunk() = default;
  explicit BodyChunk(std::string_view bytes) : view_(bytes) {}
  std::string_view view() const { return owned_ ? std::string_view(storage_) : view_; }
  std::size_t size() const { return view().size(); }
  bool empty() const { return view().empty(); }
  // The bytes to change in place.
  std::string& edit() {
    if (!owned_) {
      storage_.assign(view_);
      owned_ = true;
    }
    return storage_;
  }
  void replace(std::string bytes) {
    storage_ = std::move(bytes);
    owned_ = true;
  }
  // Points at other bytes without copying (for the manager's own buffers).
  void reset(std::string_view bytes) {
    owned_ = false;
    view_ = bytes;
  }
  bool owned() const { return owned_; }

 private:
  std::string_view view_;
  std::string storage_;
  bool owned_ = false;
};

namespace detail {
std::uint32_t nextStateIndex();
}

// Names one kind of per-stream state. Made once (a namespace-scope constant
// in the filter's source, or a member of its factory), so the request path
// indexes a vector and never looks up a string.
template <typename T>
class StateKey {
 public:
  StateKey() : index_(detail::nextStateIndex()) {}
  std::uint32_t index() const { return index_; }

 private:
  std::uint32_t index_;
};

// Typed state one filter writes and later filters (or the log hooks) read:
// identity, tenant, token reservation, cache key.
class FilterState {
 public:
  FilterState() = default;
  FilterState(const FilterState&) = delete;
  FilterState& operator=(const FilterState&) = delete;
  ~FilterState() {
    for (auto& s : slots_)
      if (s.value) s.destroy(s.value);
  }
  template <typename T>
  T* get(const StateKey<T>& key) const {
    return key.index() < slots_.size() ? static_cast<T*>(slots_[key.index()].value) : nullptr;
  }
  // Sets (or replaces) the value for `key`.
  template <typename T, typename... Args>
  T& emplace(const StateKey<T>& key, Args&&... args) {
    if (key.index() >= slots_.size()) slots_.resize(key.index() + 1);
    Slot& s = slots_[key.index()];
    if (s.value) s.destroy(s.value);
    T* value = new T(std::forward<Args>(args)...);
    s.value = value;
    s.destroy = [](void* p) { delete static_cast<T*>(p); };
    return *value;
  }

 private:
  struct Slot {
    void* value = nullptr;
    void (*destroy)(void*) = nullptr;
  };
  std::vector<Slot> slots_;
};

// What governance (the authz filter) lets one request use, for the router:
// it asks before each model it tries (fallbacks included) and picks
// endpoints only in the regions returned.
class RequestPolicy {
 public:
  virtual ~RequestPolicy() = default;
  // Endpoint regions `model` may serve this request from; nullptr: any
  // region. An empty list: the model may not serve it at all.
  virtual const std::vector<std::string>* regionsFor(const config::ModelConfig& model) const = 0;
};

// Tokens of one exchange, as the core extracts them from the response
// (proxy/filter/usage.h) when a filter wantsUsage().
struct Usage {
  std::int64_t input = -1;   // prompt tokens as the model reported them; -1: not (yet) reported
  std::int64_t output = -1;  // completion tokens as reported; -1: not (yet) reported
  std::int64_t cached_input = 0;
  std::int64_t reasoning = 0;
  // Output tokens metered from a stream's deltas so far (an estimate: one
  // per delta event, more for long ones), until the reported count comes.
  std::int64_t streamed_output = 0;
  bool reported() const { return output >= 0; }
  std::int64_t outputSoFar() const { return output >= 0 ? output : streamed_output; }
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

  // Filled by target resolution (filters/router/target_resolver.h) once the
  // body has been read, before the policy filters run.
  std::string model;  // as named by the client
  bool stream = false;
  const config::RouteConfig* route = nullptr;
  const config::ModelConfig* target_model = nullptr;  // its pricing is the price
  bool reresolve = false;  // a filter changed the model or routing headers: resolve again
  // A filter moved the request to another model (a budget downgrade): the
  // router names target_model to the backend instead.
  bool target_changed = false;
  // Why resolution failed on a matched route (no model named, unknown
  // model...): filters still run, so one may answer (direct_response); if
  // none does, the router answers with this. target_model is null then.
  std::optional<LocalReply> unresolved;
  std::string upstream_address;
  std::string_view upstream_region;  // of the endpoint that served (config-owned)
  int upstream_attempts = 0;
  int upstream_fallbacks = 0;  // fallback models tried after the first
  // How target_model was chosen, for logs and traces: "requested" (the
  // client named it), "pinned" (the route's model), "split", "capability"
  // (autoSelect), then "fallback" or "budget_downgrade" when it moved.
  std::string_view routing_reason;
  // Time the router spent in exchanges with model servers (every attempt,
  // retries and fallbacks included) and waiting for a model's admission
  // slot (circuit breakers): what the proxy's own overhead excludes.
  std::chrono::steady_clock::duration upstream_time{};
  std::chrono::steady_clock::duration queue_time{};
  const RequestPolicy* request_policy = nullptr;  // set by authz; null: no restriction

  // Values of the listener's extra access-log fields read from the request
  // body (accessLog.extra with `body`), in their order; set once the body
  // was read.
  std::vector<std::string> log_body_values;

  // Response side, for log hooks.
  unsigned response_status = 0;
  std::uint64_t request_body_bytes = 0;
  std::uint64_t response_body_bytes = 0;
  std::optional<std::chrono::steady_clock::time_point> first_byte_at;
  Usage usage;
  ErrorSource error_source = ErrorSource::None;
  std::string error_reason;  // empty when the stream ended cleanly

  FilterState state;

  // Work to cancel when the client goes away (an upstream exchange, a
  // timer): any filter may add hooks; the stream runs them all, once. The
  // first few live inline, so the common case allocates nothing.
  std::uint64_t addCancelHook(std::function<void()> fn) {
    const std::uint64_t id = ++last_hook_;
    for (auto& h : inline_hooks_)
      if (h.id == 0) {
        h = Hook{id, std::move(fn)};
        return id;
      }
    more_hooks_.push_back(Hook{id, std::move(fn)});
    return id;
  }
  void removeCancelHook(std::uint64_t id) {
    for (auto& h : inline_hooks_)
      if (h.id == id) {
        h = Hook{};
        return;
      }
    std::erase_if(more_hooks_, [id](const Hook& h) { return h.id == id; });
  }
  void cancel() {
    std::vector<std::function<void()>> run;
    for (auto& h : inline_hooks_)
      if (h.id != 0) {
        run.push_back(std::move(h.fn));
        h = Hook{};
      }
    for (auto& h : more_hooks_) run.push_back(std::move(h.fn));
    more_hooks_.clear();
    for (auto& fn : run) fn();
  }

  // Set by sendLocalReply(); the filter manager stops and answers with it.
  std::optional<LocalReply> local_reply;

  void sendLocalReply(unsigned status, std::string message, std::string type, std::string code) {
    LocalReply r;
    r.status = status;
    r.message = std::move(message);
    r.type = std::move(type);
    r.code = std::move(code);
    sendLocalReply(std::move(r));
  }
  void sendLocalReply(LocalReply reply) {
    local_reply = std::move(reply);
    reply_requested = true;
  }
  // Set by sendLocalReply(); the filter manager clears it before each hook
  // and answers when a hook set it (a reply already being written does not
  // stop the response filters).
  bool reply_requested = false;

 private:
  struct Hook {
    std::uint64_t id = 0;  // 0: free
    std::function<void()> fn;
  };
  std::array<Hook, 4> inline_hooks_{};
  std::vector<Hook> more_hooks_;
  std::uint64_t last_hook_ = 0;
};

// One cancel hook that a filter replaces as its work moves on (connect,
// then the exchange, then a backoff), and clears when that work is done.
class CancelSlot {
 public:
  CancelSlot() = default;
  CancelSlot(const CancelSlot&) = delete;
  CancelSlot& operator=(const CancelSlot&) = delete;
  ~CancelSlot() { clear(); }
  void set(StreamContext& ctx, std::function<void()> fn) {
    clear();
    ctx_ = &ctx;
    id_ = ctx.addCancelHook(std::move(fn));
  }
  void clear() {
    if (ctx_ != nullptr) ctx_->removeCancelHook(id_);
    ctx_ = nullptr;
  }

 private:
  StreamContext* ctx_ = nullptr;
  std::uint64_t id_ = 0;
};

// A cancel hook for the length of a scope.
class CancelHook {
 public:
  CancelHook(StreamContext& ctx, std::function<void()> fn) : ctx_(ctx), id_(ctx.addCancelHook(std::move(fn))) {}
  ~CancelHook() { ctx_.removeCancelHook(id_); }
  CancelHook(const CancelHook&) = delete;
  CancelHook& operator=(const CancelHook&) = delete;

 private:
  StreamContext& ctx_;
  std::uint64_t id_;
};

}  // namespace infermesh::filter
