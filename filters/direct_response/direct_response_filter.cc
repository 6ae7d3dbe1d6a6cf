// direct_response: answers requests from config instead of a model, e.g. a
// maintenance notice on one route or a canned /v1/models. With no config
// it passes everything on, so a listener can list it and routes switch it
// on with their own config (Route.filters).
//
//   config: {status: 503, headers: {retry-after: "30"}, contentType: application/json, body: '{...}'}
//   config: {status: 200, events: ['{"choices":[...]}', '[DONE]']}   # an SSE stream, one event per entry
#include <simdjson.h>

#include "proxy/filter/filter.h"
#include "proxy/stats/filter_metrics.h"

namespace infermesh::direct_response {
namespace {

struct Config {
  bool enabled = false;
  filter::LocalReply reply;  // copied per answer
  stats::CounterMetric answered;
};

bool parse(std::string_view json, Config& out, std::string& error) {
  simdjson::dom::parser parser;
  simdjson::dom::object obj;
  if (parser.parse(json.data(), json.size()).get(obj)) {
    error = "config must be a mapping";
    return false;
  }
  auto& r = out.reply;
  r.code = "direct_response";
  r.type = "direct_response";
  bool has_body = false;
  for (auto [key, value] : obj) {
    const std::string field(key);
    if (key == "status") {
      std::int64_t status = 0;
      if (value.get(status) || status < 200 || status > 599) {
        error = "status: must be a number from 200 to 599";
        return false;
      }
      r.status = static_cast<unsigned>(status);
    } else if (key == "headers") {
      simdjson::dom::object pairs;
      if (value.get(pairs)) {
        error = "headers: must map names to values";
        return false;
      }
      for (auto [name, v] : pairs) {
        std::string_view text;
        if (v.get(text) || text.find_first_of("\r\n") != std::string_view::npos || name.empty()) {
          error = "headers." + std::string(name) + ": must be a string on one line";
          return false;
        }
        r.extra_headers.emplace_back(std::string(name), std::string(text));
      }
    } else if (key == "contentType") {
      std::string_view text;
      if (value.get(text)) {
        error = "contentType: must be a string";
        return false;
      }
      r.content_type = std::string(text);
    } else if (key == "body") {
      std::string_view text;
      if (value.get(text)) {
        error = "body: must be a string";
        return false;
      }
      r.body = std::string(text);
      has_body = true;
    } else if (key == "events") {
      simdjson::dom::array events;
      if (value.get(events)) {
        error = "events: must be a list of event data";
        return false;
      }
      for (auto e : events) {
        std::string_view data;
        if (e.get(data) || data.find_first_of("\r\n") != std::string_view::npos) {
          error = "events: each entry is one line of event data";
          return false;
        }
        r.chunks.push_back("data: " + std::string(data) + "\n\n");
      }
      if (r.chunks.empty()) {
        error = "events: must not be empty";
        return false;
      }
    } else {
      error = field + ": unknown field (status, headers, contentType, body, events)";
      return false;
    }
  }
  if (has_body && !r.chunks.empty()) {
    error = "body and events: give one or the other";
    return false;
  }
  out.enabled = r.status != 0;
  if (!out.enabled && (has_body || !r.chunks.empty() || !r.extra_headers.empty())) {
    error = "status: is required";
    return false;
  }
  if (!r.chunks.empty() && r.content_type.empty()) r.content_type = "text/event-stream";
  if (has_body && r.content_type.empty()) r.content_type = "application/json";
  if (out.enabled && !has_body && r.chunks.empty()) r.body = std::string();
  return true;
}

class DirectResponseFilter final : public filter::StreamFilter {
 public:
  explicit DirectResponseFilter(const Config& config) : config_(config) {}
  filter::FilterStatus onRequestHeaders(filter::StreamContext& ctx, bool) override {
    if (!config_.enabled) return filter::FilterStatus::Continue;
    config_.answered.inc();
    ctx.sendLocalReply(config_.reply);
    return filter::FilterStatus::Stop;
  }

 private:
  const Config& config_;
};

class Factory final : public filter::FilterFactory {
 public:
  explicit Factory(Config config) : config_(std::move(config)) {}
  std::unique_ptr<filter::StreamFilter> create() const override {
    return std::make_unique<DirectResponseFilter>(config_);
  }

 private:
  const Config config_;
};

std::shared_ptr<const filter::FilterFactory> build(std::string_view json, std::string& error) {
  Config config;
  if (!parse(json.empty() ? "{}" : json, config, error)) return nullptr;
  if (config.enabled)
    config.answered = stats::FilterMetrics::instance().counter(
        "infermesh_direct_responses_total", "Requests the direct_response filter answered, by status.",
        {{"status", std::to_string(config.reply.status)}});
  return std::make_shared<Factory>(std::move(config));
}

const filter::Registration kRegistered{"direct_response", &build};

}  // namespace
}  // namespace infermesh::direct_response
