#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "proxy/filter/stream_context.h"

namespace infermesh::filter {

enum class FilterStatus {
  // Pass the event to the next filter.
  Continue,
  // Hold the event here. The filter later calls FilterCallbacks::resume()
  // (the event continues with the next filter) or sends a local reply
  // first. Meanwhile reading from the client (request side) or from the
  // upstream (response side) pauses, so a stopped filter never has to
  // buffer unbounded data.
  Stop,
  // Body hooks only: keep this data and ask for more. The next call brings
  // the kept bytes again, followed by what arrived since, until the filter
  // continues (at end_stream it must: StopAndBuffer then acts as Stop).
  // Bounded by FilterManager::kMaxBufferedBody; past it the stream gets a
  // 413 (request) or a 500 / reset (response).
  StopAndBuffer,
};

// What a filter can ask of the stream it runs on. Implemented by the filter
// manager; timers and resets are carried out by the stream driver on the
// stream's worker, so a callback never runs on another thread.
class FilterCallbacks {
 public:
  virtual ~FilterCallbacks() = default;
  // Continues the event this filter stopped (request or response side).
  virtual void resume() = 0;
  // Runs `fn` on the stream's worker after `delay`, unless cancelled or the
  // stream ended first. Returns an id for cancelTimer().
  virtual std::uint64_t startTimer(std::chrono::milliseconds delay, std::function<void()> fn) = 0;
  virtual void cancelTimer(std::uint64_t id) = 0;
  // Ends the stream now: the client sees a reset (HTTP/2) or a closed
  // connection (HTTP/1.1); upstream work is cancelled.
  virtual void resetStream() = 0;
  // Response body hooks: this event is the response's last. The chunk as
  // the filter leaves it goes out with end_stream (filters after it see
  // end_stream true), nothing later reaches the client, and the upstream
  // exchange is cancelled. For streams cut short on purpose (a token limit
  // finishing an SSE stream), not for errors.
  virtual void endResponse() = 0;
  // A function any thread may call to run work on the stream's worker (the
  // answer of a store with its own thread). Work arriving after the stream
  // ended is dropped. Empty when the stream has no worker (unit tests).
  virtual std::function<void(std::function<void()>)> dispatcher() = 0;
};

// A per-stream filter. Every hook has a pass-through default, so a filter
// overrides only the phases it cares about. Hooks never throw.
//
// Request hooks run in chain order, response hooks in reverse order. Each
// filter sees the end of each direction exactly once: end_stream is true on
// the last headers or body event; when a stream ends with trailers, the body
// hook gets an empty chunk with end_stream first, then the trailers hook.
class StreamFilter {
 public:
  virtual ~StreamFilter() = default;
  virtual void setCallbacks(FilterCallbacks& cb) { callbacks_ = &cb; }

  virtual FilterStatus onRequestHeaders(StreamContext&, bool end_stream) { return FilterStatus::Continue; }
  virtual FilterStatus onRequestBody(StreamContext&, BodyChunk& chunk, bool end_stream) {
    return FilterStatus::Continue;
  }
  virtual FilterStatus onRequestTrailers(StreamContext&, HeaderList& trailers) { return FilterStatus::Continue; }

  virtual FilterStatus onResponseHeaders(StreamContext&, ResponseHead& head, bool end_stream) {
    return FilterStatus::Continue;
  }
  // With wantsResponseEvents(), an SSE (text/event-stream) or NDJSON response
  // arrives in chunks that hold one or more whole events (lines for
  // NDJSON), never a fragment; forEachEvent() walks them.
  virtual FilterStatus onResponseBody(StreamContext&, BodyChunk& chunk, bool end_stream) {
    return FilterStatus::Continue;
  }
  // May add or change trailers (HTTP/2 and gRPC; HTTP/1.1 chunked).
  virtual FilterStatus onResponseTrailers(StreamContext&, HeaderList& trailers) { return FilterStatus::Continue; }
  virtual bool wantsResponseEvents() const { return false; }
  // The core extracts token usage from the response into ctx.usage
  // (proxy/filter/usage.h) for the chain when any filter asks.
  virtual bool wantsUsage() const { return false; }

  // Runs once when the stream is over, whatever happened (completed,
  // answered locally, reset, client gone), before onLog.
  virtual void onComplete(StreamContext&) {}
  // Runs once after the last byte, for logs and metrics.
  virtual void onLog(const StreamContext&) {}

 protected:
  FilterCallbacks* callbacks_ = nullptr;
};

// Calls fn(event) for each whole SSE event (without its blank line) or
// NDJSON line in `chunk`, as framed for wantsResponseEvents() filters.
void forEachEvent(std::string_view chunk, bool ndjson, const std::function<void(std::string_view)>& fn);

// Built once per config snapshot from the filter's YAML config; immutable and
// shared by every stream on every worker that uses that snapshot.
class FilterFactory {
 public:
  virtual ~FilterFactory() = default;
  virtual std::unique_ptr<StreamFilter> create() const = 0;
  // A terminal filter produces the response (the router); it must be last.
  virtual bool terminal() const { return false; }
};

// Builds a factory from the filter's config (JSON text of the YAML `config`
// mapping). On bad config returns nullptr and sets `error`.
using FilterFactoryBuilder =
    std::function<std::shared_ptr<const FilterFactory>(std::string_view config_json, std::string& error)>;

// Target resolution (DESIGN.md section 4, step 4), run by the stream driver
// once the request body is complete and before any filter: sets
// ctx.model, ctx.stream, ctx.route and ctx.target_model, and may rewrite the
// body. Returns false with ctx.local_reply set when the request cannot be
// served. Implemented next to the router (filters/router/target_resolver.h).
class TargetResolver {
 public:
  virtual ~TargetResolver() = default;
  virtual bool resolve(StreamContext& ctx, std::string& body) const = 0;
};

// Runtime state a filter builds for each new snapshot before any worker
// sees it (key sources, metrics per policy, writers), stored in
// snapshot.filter_runtime[slot]. Runs on the proxy's main thread only,
// never in the control plane or tools, which validate without sockets.
// False with `error` rejects the snapshot like a config error.
struct SnapshotPreparer {
  std::function<bool(const config::Snapshot&, std::string& error)> prepare;
};

// A slot in Snapshot::filter_runtime, taken once by a filter at start-up.
std::uint32_t nextRuntimeSlot();

// Filters register by name; listeners name them in YAML.
class FilterRegistry {
 public:
  static FilterRegistry& instance();
  void add(std::string name, FilterFactoryBuilder builder);
  const FilterFactoryBuilder* find(std::string_view name) const;
  // "authn, authz, ...": the registered names, sorted, for errors.
  std::string names() const;
  void addPreparer(SnapshotPreparer p) { preparers_.push_back(std::move(p)); }
  bool prepare(const config::Snapshot& snapshot, std::string& error) const;
  void setResolver(std::shared_ptr<const TargetResolver> r) { resolver_ = std::move(r); }
  const std::shared_ptr<const TargetResolver>& resolver() const { return resolver_; }

 private:
  std::vector<std::pair<std::string, FilterFactoryBuilder>> builders_;
  std::vector<SnapshotPreparer> preparers_;
  std::shared_ptr<const TargetResolver> resolver_;
};

// Registers a filter at start-up from its own source file:
//   static const filter::Registration kRegistered{"headers", &buildHeadersFilter};
// A filter folder's library is linked whole (filters/CMakeLists.txt), so the
// object is never dropped and no other file names the filter.
struct Registration {
  Registration(std::string name, FilterFactoryBuilder builder) {
    FilterRegistry::instance().add(std::move(name), std::move(builder));
  }
  explicit Registration(std::shared_ptr<const TargetResolver> resolver) {
    FilterRegistry::instance().setResolver(std::move(resolver));
  }
  explicit Registration(SnapshotPreparer preparer) { FilterRegistry::instance().addPreparer(std::move(preparer)); }
};

// A Route's setting for one filter of the listener's chain: its own config
// (compiled by the filter's builder into a factory, once per config
// version), or the filter turned off on that route.
struct RouteFilterOverride {
  std::string name;
  std::shared_ptr<const FilterFactory> factory;  // null when disabled
  bool disabled = false;
};

}  // namespace infermesh::filter
