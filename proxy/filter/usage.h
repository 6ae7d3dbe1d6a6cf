#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "proxy/filter/stream_context.h"

namespace infermesh::filter {

// Reads token usage out of a response, once, for every filter of the chain
// (DESIGN.md section 4, step 7): `usage` of an OpenAI answer
// (prompt_tokens, completion_tokens, their details) or of an Anthropic one
// (input_tokens, output_tokens, cache_read_input_tokens), from the body of
// a JSON answer or from the events of an SSE / NDJSON stream, whose deltas
// it also meters while the stream runs. Run by the filter manager before
// the response filters see each body event.
class UsageExtractor {
 public:
  // Largest JSON answer kept to read its usage; a larger one is not read.
  static constexpr std::size_t kMaxJsonBody = 4 * 1024 * 1024;

  void onHeaders(const ResponseHead& head);
  // `chunk` holds whole events for streams (the manager frames them).
  void onBody(std::string_view chunk, bool end_stream, Usage& usage);

 private:
  enum class Mode : std::uint8_t { None, Json, Events };
  Mode mode_ = Mode::None;
  bool ndjson_ = false;
  bool overflow_ = false;
  std::string json_;
};

// Parses one usage object (the value of "usage", or an Anthropic
// "message_start"/"message_delta" event) into `usage`; false if `json` holds none.
bool readUsage(std::string_view json, Usage& usage);

// The output tokens a stream event's deltas carry (0: none), as metered.
std::int64_t meterDeltaTokens(std::string_view event_json);

}  // namespace infermesh::filter
