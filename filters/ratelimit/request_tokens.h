#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace infermesh::tokenizer {
class BpeTokenizer;
}

namespace infermesh::ratelimit {

// What token accounting reads from an OpenAI-style request body (chat,
// completions, embeddings; Anthropic messages).
struct RequestTokens {
  bool valid = false;  // a JSON object
  std::int64_t input = 0;        // prompt tokens, counted or estimated
  std::int64_t max_output = -1;  // max_tokens / max_completion_tokens; -1: not given
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage already set
  bool has_stream_options = false;
};

// Counts the prompt's tokens with `tokenizer` (null: the estimate), with
// the per-message framing OpenAI's chat format adds (3 per message, 1 per
// name, 3 to prime the reply).
RequestTokens readRequestTokens(std::string_view body, const tokenizer::BpeTokenizer* tokenizer);

// Asks the engine for the final usage chunk of a stream: adds
// "stream_options":{"include_usage":true} to the top-level object of a
// body that has no stream_options (one that does is left as the client
// wrote it; its stream is then metered from the deltas alone).
bool requestStreamUsage(std::string& body);

}  // namespace infermesh::ratelimit
