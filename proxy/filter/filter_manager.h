#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "proxy/filter/filter.h"
#include "proxy/filter/usage.h"

namespace infermesh::filter {

// What the stream driver does for the filter manager: the parts of the
// callbacks that need the worker's event loop.
class StreamServices {
 public:
  virtual ~StreamServices() = default;
  virtual std::uint64_t startTimer(std::chrono::milliseconds delay, std::function<void()> fn) = 0;
  virtual void cancelTimer(std::uint64_t id) = 0;
  virtual void resetStream() = 0;
  virtual std::function<void(std::function<void()>)> dispatcher() = 0;
};

// Runs one stream's filter chain: request events in chain order, response
// events in reverse order, completion and log hooks at the end. A filter
// may stop an event and resume it later, keep body data until it has seen
// enough, edit what passes, or answer locally. No Asio here: the stream
// driver (proxy/server/stream_driver.h) feeds it events and carries out
// timers and resets through StreamServices.
class FilterManager final : private FilterCallbacks {
 public:
  enum class Progress {
    Done,        // every filter took the event
    Stopped,     // a filter holds it; on_resume fires when it lets go
    LocalReply,  // ctx.local_reply is set; answer with it
  };
  // Body bytes one filter may keep with StopAndBuffer.
  static constexpr std::size_t kMaxBufferedBody = 8 * 1024 * 1024;

  FilterManager(StreamContext& ctx, std::vector<std::unique_ptr<StreamFilter>> filters,
                StreamServices* services = nullptr);
  FilterManager(const FilterManager&) = delete;
  FilterManager& operator=(const FilterManager&) = delete;

  // Once the route is known: filters the route configures differently are
  // recreated from the route's factory, those it turns off leave the chain.
  // `names` parallels the chain the manager was built with. Before any event.
  void applyRoute(const std::vector<std::string>& names, const std::vector<RouteFilterOverride>& overrides);

  // Request side. A body event that returns Done leaves in `chunk` what the
  // last filter passed on.
  Progress requestHeaders(bool end_stream);
  Progress requestBody(BodyChunk& chunk, bool end_stream);
  Progress requestBody(std::string_view bytes, bool end_stream) {
    BodyChunk c(bytes);
    return requestBody(c, end_stream);
  }
  Progress requestTrailers(HeaderList& trailers);

  // Response side. After Done (directly or through on_resume), `head`,
  // `chunk` or `trailers` hold what goes to the client; a body event may
  // leave an empty chunk (a filter keeps data, or an SSE event is not
  // complete yet).
  Progress responseHeaders(ResponseHead& head, bool end_stream);
  Progress responseBody(BodyChunk& chunk, bool end_stream);
  Progress responseTrailers(HeaderList& trailers);
  // The chunk a stopped body event will pass on once resumed.
  BodyChunk& pendingChunk() { return *chunk_; }

  // onComplete on every filter, then onLog; each runs once.
  void complete();
  void log();

  // A response filter ended the response early (endResponse()): the
  // driver writes what the last body event left with end_stream and stops.
  bool responseEnded() const { return response_ended_; }
  bool wantsUsage() const { return usage_ != nullptr; }

  // Called (on the stream's thread) when a stopped event has finished
  // iterating after resume(), with the event's new progress.
  std::function<void(Progress)> on_resume;

 private:
  enum class Event { None, RequestHeaders, RequestBody, RequestTrailers, ResponseHeaders, ResponseBody, ResponseTrailers };
  void resume() override;
  std::uint64_t startTimer(std::chrono::milliseconds delay, std::function<void()> fn) override;
  void cancelTimer(std::uint64_t id) override;
  void resetStream() override;
  void endResponse() override;
  std::function<void(std::function<void()>)> dispatcher() override;

  void noteWants(const StreamFilter& f);
  Progress start(Event e, bool end_stream, BodyChunk* chunk);
  Progress iterate(std::size_t from);
  FilterStatus call(StreamFilter& f);
  bool responseSide() const { return pending_ >= Event::ResponseHeaders; }
  // SSE/NDJSON: the longest prefix of whole events; the rest waits.
  void frameEvents(BodyChunk& chunk, bool end_stream);

  StreamContext& ctx_;
  std::vector<std::unique_ptr<StreamFilter>> filters_;
  StreamServices* services_;
  Event pending_ = Event::None;
  std::size_t stopped_at_ = 0;  // position in iteration order
  bool end_stream_ = false;
  BodyChunk* chunk_ = nullptr;
  BodyChunk held_;  // a stopped body event's chunk, owned
  ResponseHead* head_ = nullptr;
  HeaderList* trailers_ = nullptr;
  std::vector<std::string> buffered_;  // per filter, for StopAndBuffer
  bool frame_events_ = false;          // some response filter wants whole events
  bool framing_ = false;               // ... and this response is SSE or NDJSON
  bool ndjson_ = false;
  std::string frame_rest_;   // bytes after the last whole event
  std::string frame_chunk_;  // the events being delivered when frame_rest_ was used
  bool completed_ = false;
  bool logged_ = false;
  bool response_ended_ = false;
  std::unique_ptr<UsageExtractor> usage_;  // when a filter wantsUsage()
};

}  // namespace infermesh::filter
