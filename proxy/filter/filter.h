#pragma once

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
  // (the event continues with the next filter) or sets a local reply first
  // (the stream is answered locally). Reading from the client pauses
  // meanwhile, so a stopped filter never has to buffer unbounded data.
  Stop,
};

// Given to each filter instance; implemented by the filter manager.
class FilterCallbacks {
 public:
  virtual ~FilterCallbacks() = default;
  virtual void resume() = 0;
};

// A per-stream filter. Every hook has a pass-through default, so a filter
// overrides only the phases it cares about. Hooks never throw.
class StreamFilter {
 public:
  virtual ~StreamFilter() = default;
  virtual void setCallbacks(FilterCallbacks& cb) { callbacks_ = &cb; }

  virtual FilterStatus onRequestHeaders(StreamContext&, bool end_stream) { return FilterStatus::Continue; }
  virtual FilterStatus onRequestBody(StreamContext&, std::string_view chunk, bool end_stream) {
    return FilterStatus::Continue;
  }
  // Response phases observe and may edit; they run in reverse chain order.
  virtual void onResponseHeaders(StreamContext&, ResponseHead&) {}
  virtual void onResponseBody(StreamContext&, std::string_view chunk, bool end_stream) {}
  // Runs once when the stream is over, whatever happened.
  virtual void onLog(const StreamContext&) {}

 protected:
  FilterCallbacks* callbacks_ = nullptr;
};

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

// Filters register by name; listeners name them in YAML.
class FilterRegistry {
 public:
  static FilterRegistry& instance();
  void add(std::string name, FilterFactoryBuilder builder);
  const FilterFactoryBuilder* find(std::string_view name) const;

 private:
  std::vector<std::pair<std::string, FilterFactoryBuilder>> builders_;
};

}  // namespace infermesh::filter
