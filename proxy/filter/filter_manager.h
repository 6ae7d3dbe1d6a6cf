#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "proxy/filter/filter.h"

namespace infermesh::filter {

// Runs one stream's filter chain: request events in chain order, response
// events in reverse order, log hooks at the end. A filter may stop an event
// and resume it later, or answer locally.
class FilterManager final : private FilterCallbacks {
 public:
  enum class Progress {
    Done,        // every filter took the event
    Stopped,     // a filter holds it; on_resume fires when it lets go
    LocalReply,  // ctx.local_reply is set; answer with it
  };

  FilterManager(StreamContext& ctx, std::vector<std::unique_ptr<StreamFilter>> filters);
  FilterManager(const FilterManager&) = delete;
  FilterManager& operator=(const FilterManager&) = delete;

  Progress requestHeaders(bool end_stream);
  Progress requestBody(std::string_view chunk, bool end_stream);
  void responseHeaders(ResponseHead& head);
  void responseBody(std::string_view chunk, bool end_stream);
  void log();

  // Called (on the stream's thread) when a stopped event has finished
  // iterating after resume(), with the event's new progress.
  std::function<void(Progress)> on_resume;

 private:
  enum class Event { None, Headers, Body };
  void resume() override;
  Progress iterate(std::size_t from);

  StreamContext& ctx_;
  std::vector<std::unique_ptr<StreamFilter>> filters_;
  Event pending_ = Event::None;
  std::size_t stopped_at_ = 0;
  bool end_stream_ = false;
  std::string_view chunk_;     // the body chunk being iterated
  std::string pending_chunk_;  // its copy while a stopped filter holds it
};

}  // namespace infermesh::filter
