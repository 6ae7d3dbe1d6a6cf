#include "filters/ratelimit/request_tokens.h"

#include <simdjson.h>

#include "proxy/tokenizer/bpe_tokenizer.h"

namespace infermesh::ratelimit {

namespace {

simdjson::dom::parser& parser() {
  thread_local simdjson::dom::parser p;
  return p;
}

std::int64_t countText(std::string_view text, const tokenizer::BpeTokenizer* t) {
  if (text.empty()) return 0;
  return static_cast<std::int64_t>(t ? t->count(text) : tokenizer::estimateTokens(text));
}

// Text of a content value: a string, or an array of parts with "text".
std::int64_t countContent(simdjson::dom::element v, const tokenizer::BpeTokenizer* t) {
  std::string_view s;
  if (!v.get_string().get(s)) return countText(s, t);
  simdjson::dom::array parts;
  std::int64_t n = 0;
  if (!v.get_array().get(parts))
    for (auto p : parts) {
      if (!p.get_string().get(s)) n += countText(s, t);
      else if (!p["text"].get_string().get(s)) n += countText(s, t);
    }
  return n;
}

}  // namespace

RequestTokens readRequestTokens(std::string_view body, const tokenizer::BpeTokenizer* t) {
  RequestTokens r;
  simdjson::dom::element doc;
  simdjson::dom::object obj;
  if (parser().parse(body.data(), body.size()).get(doc) || doc.get_object().get(obj)) return r;
  r.valid = true;
  for (auto f : obj) {
    const std::string_view k = f.key;
    if (k == "messages") {
      simdjson::dom::array msgs;
      if (f.value.get_array().get(msgs)) continue;
      for (auto m : msgs) {
        r.input += 3;
        simdjson::dom::element c;
        if (!m["content"].get(c)) r.input += countContent(c, t);
        std::string_view s;
        if (!m["name"].get_string().get(s)) r.input += 1 + countText(s, t);
        if (!m["role"].get_string().get(s)) r.input += countText(s, t);
      }
      r.input += 3;
    } else if (k == "prompt" || k == "input" || k == "system") {
      r.input += countContent(f.value, t);
    } else if (k == "max_tokens" || k == "max_completion_tokens") {
      std::int64_t n = 0;
      if (!f.value.get_int64().get(n) && n >= 0) r.max_output = n;
    } else if (k == "stream") {
      bool b = false;
      if (!f.value.get_bool().get(b)) r.stream = b;
    } else if (k == "stream_options") {
      r.has_stream_options = true;
      bool b = false;
      if (!f.value["include_usage"].get_bool().get(b)) r.include_usage = b;
    }
  }
  return r;
}

bool requestStreamUsage(std::string& body) {
  const auto end = body.find_last_of('}');
  if (end == std::string::npos) return false;
  std::size_t prev = end;
  while (prev > 0 && (body[prev - 1] == ' ' || body[prev - 1] == '\n' || body[prev - 1] == '\t' || body[prev - 1] == '\r'))
    --prev;
  const bool empty_object = prev > 0 && body[prev - 1] == '{';
  body.insert(end, empty_object ? "\"stream_options\":{\"include_usage\":true}" : ",\"stream_options\":{\"include_usage\":true}");
  return true;
}

}  // namespace infermesh::ratelimit
