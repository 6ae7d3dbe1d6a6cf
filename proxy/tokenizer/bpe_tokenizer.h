#pragma once

// Byte-level BPE token counting, exactly as OpenAI's tiktoken (and npm
// js-tiktoken) counts cl100k_base and o200k_base (docs/tokenizer.md).
//
// A text is split by the encoding's pattern (PCRE2, the split pattern
// js-tiktoken carries as `pat_str`); each piece that is itself in the rank
// table is one token, any other is byte-pair merged, lowest rank first.
// Special tokens such as <|endoftext|> are NOT recognised: they are counted
// as ordinary text, which is what counting a user's prompt needs (it is
// also what tiktoken's encode_ordinary does).
//
// Input that is not valid UTF-8 never crashes: the split pattern matches
// only valid characters, and each maximal run of bytes it leaves between
// matches (the invalid bytes) is one more piece, byte-pair merged like any
// other.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace infermesh::tokenizer {

enum class Pattern { Cl100k, O200k };

// "cl100k_base" or "o200k_base"; nullopt for any other name.
std::optional<Pattern> patternFor(std::string_view encoding_name);

class BpeTokenizer {
 public:
  // Reads a tiktoken rank file (one "<base64 token bytes> <rank>" a line).
  // nullptr and a clear error (file, line) on a missing/garbled file.
  static std::shared_ptr<const BpeTokenizer> load(const std::string& path, Pattern pattern, std::string& error);

  // The number of tokens of `text`. Thread-safe, const; invalid UTF-8 must
  // not crash (see above). 0 for an empty text.
  std::size_t count(std::string_view text) const;
  // The tokens' ranks (token ids), for tests; count(t) == encode(t).size().
  std::vector<std::uint32_t> encode(std::string_view text) const;

 private:
  struct Impl;
  explicit BpeTokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// One loaded tokenizer per (path, pattern) for the process (mutex-protected
// map); kept for the life of the process. A failed load is not remembered,
// so a corrected file is read on the next call.
std::shared_ptr<const BpeTokenizer> loadCached(const std::string& path, Pattern pattern, std::string& error);

// Without a tokenizer file: an estimate from character classes. On
// tests/data/tokenizer_corpus.jsonl its mean absolute relative error against
// cl100k_base is given in docs/tokenizer.md (checked by the unit test).
std::size_t estimateTokens(std::string_view text);

}  // namespace infermesh::tokenizer
