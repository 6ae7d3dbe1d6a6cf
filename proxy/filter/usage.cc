#include "proxy/filter/usage.h"

#include <simdjson.h>

#include "proxy/filter/filter.h"

namespace infermesh::filter {

namespace {

simdjson::dom::parser& parser() {
  thread_local simdjson::dom::parser p;
  return p;
}

std::int64_t intField(simdjson::dom::object o, std::string_view key, std::int64_t fallback) {
  std::int64_t v = 0;
  if (o[key].get_int64().get(v) || v < 0) return fallback;
  return v;
}

// One delta's text: one token per event (engines send about one each),
// more for a long piece (several tokens sent together), at ~4 bytes each.
std::int64_t tokensOf(std::string_view text) {
  if (text.empty()) return 0;
  return 1 + (text.size() > 16 ? static_cast<std::int64_t>((text.size() - 16 + 3) / 4) : 0);
}

std::int64_t textTokens(simdjson::dom::object o, std::initializer_list<std::string_view> keys) {
  std::int64_t n = 0;
  for (auto k : keys) {
    std::string_view s;
    if (!o[k].get_string().get(s)) n += tokensOf(s);
  }
  return n;
}

void readUsageObject(simdjson::dom::object u, bool output_too, Usage& usage) {
  std::int64_t in = intField(u, "prompt_tokens", -1);
  if (in < 0) in = intField(u, "input_tokens", -1);
  if (in >= 0) usage.input = in;
  if (output_too) {
    std::int64_t out = intField(u, "completion_tokens", -1);
    if (out < 0) out = intField(u, "output_tokens", -1);
    if (out >= 0) usage.output = out;
  }
  simdjson::dom::object d;
  if (!u["prompt_tokens_details"].get_object().get(d)) usage.cached_input = intField(d, "cached_tokens", usage.cached_input);
  usage.cached_input = intField(u, "cache_read_input_tokens", usage.cached_input);
  if (!u["completion_tokens_details"].get_object().get(d))
    usage.reasoning = intField(d, "reasoning_tokens", usage.reasoning);
}

// The JSON payload of one SSE event (its data lines joined), or the NDJSON line.
std::string_view eventPayload(std::string_view event, bool ndjson, std::string& scratch) {
  if (ndjson) return event;
  std::string_view first;
  int lines = 0;
  while (!event.empty()) {
    const auto nl = event.find('\n');
    std::string_view line = event.substr(0, nl);
    event = nl == std::string_view::npos ? std::string_view() : event.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!line.starts_with("data:")) continue;
    line.remove_prefix(5);
    if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    if (++lines == 1) {
      first = line;
      continue;
    }
    if (lines == 2) scratch.assign(first);
    scratch += '\n';
    scratch.append(line);
  }
  return lines > 1 ? std::string_view(scratch) : first;
}

}  // namespace

bool readUsage(std::string_view json, Usage& usage) {
  if (json.find("usage") == std::string_view::npos) return false;
  simdjson::dom::element doc;
  simdjson::dom::object o, u;
  if (parser().parse(json.data(), json.size()).get(doc) || doc.get_object().get(o)) return false;
  std::string_view type;
  const bool message_start = !o["type"].get_string().get(type) && type == "message_start";
  if (!o["usage"].get_object().get(u)) {
    readUsageObject(u, true, usage);
    return true;
  }
  simdjson::dom::object m;
  if (!o["message"].get_object().get(m) && !m["usage"].get_object().get(u)) {
    // Anthropic's message_start: its output count is a placeholder.
    readUsageObject(u, !message_start, usage);
    return true;
  }
  return false;
}

std::int64_t meterDeltaTokens(std::string_view json) {
  simdjson::dom::element doc;
  simdjson::dom::object o;
  if (parser().parse(json.data(), json.size()).get(doc) || doc.get_object().get(o)) return 0;
  std::int64_t n = 0;
  simdjson::dom::array choices;
  if (!o["choices"].get_array().get(choices)) {
    for (auto c : choices) {
      simdjson::dom::object co, delta;
      if (c.get_object().get(co)) continue;
      n += textTokens(co, {"text"});
      if (co["delta"].get_object().get(delta)) continue;
      n += textTokens(delta, {"content", "reasoning_content", "reasoning"});
      simdjson::dom::array calls;
      if (!delta["tool_calls"].get_array().get(calls))
        for (auto call : calls) {
          simdjson::dom::object fn;
          if (!call["function"].get_object().get(fn)) n += textTokens(fn, {"arguments"});
        }
    }
    return n;
  }
  simdjson::dom::object delta;  // Anthropic content_block_delta
  if (!o["delta"].get_object().get(delta)) n += textTokens(delta, {"text", "partial_json", "thinking"});
  return n;
}

void UsageExtractor::onHeaders(const ResponseHead& head) {
  mode_ = Mode::None;
  if (head.status < 200 || head.status >= 300) return;
  const std::string_view type = head.headers.get("content-type").value_or("");
  ndjson_ = type.starts_with("application/x-ndjson") || type.starts_with("application/jsonl") ||
            type.starts_with("application/ndjson");
  if (ndjson_ || type.starts_with("text/event-stream")) mode_ = Mode::Events;
  else if (type.starts_with("application/json")) mode_ = Mode::Json;
}

void UsageExtractor::onBody(std::string_view chunk, bool end_stream, Usage& usage) {
  if (mode_ == Mode::Events) {
    std::string scratch;
    forEachEvent(chunk, ndjson_, [&](std::string_view event) {
      const std::string_view payload = eventPayload(event, ndjson_, scratch);
      if (payload.empty() || payload.front() != '{') return;  // [DONE], comments
      if (!readUsage(payload, usage)) usage.streamed_output += meterDeltaTokens(payload);
    });
    return;
  }
  if (mode_ != Mode::Json || overflow_) return;
  if (end_stream && json_.empty()) {
    readUsage(chunk, usage);  // the whole answer in one piece: no copy
    return;
  }
  if (json_.size() + chunk.size() > kMaxJsonBody) {
    overflow_ = true;
    json_.clear();
    return;
  }
  json_.append(chunk);
  if (end_stream) readUsage(json_, usage);
}

}  // namespace infermesh::filter
