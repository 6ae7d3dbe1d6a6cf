// estimateTokens: a token count without a rank file, from runs of
// character classes, with costs fitted to cl100k_base on
// tests/data/tokenizer_corpus.jsonl (the unit test measures the error;
// docs/tokenizer.md has the figure). One pass, no allocation, no tables.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "proxy/tokenizer/bpe_tokenizer.h"

namespace infermesh::tokenizer {
namespace {

enum class Run { None, Word, Digits, Punct, Space };

// Decodes one UTF-8 character at s[i]; 0xFFFFFFFF for a byte that does not
// start a valid one (then len is 1).
std::uint32_t decode(std::string_view s, std::size_t i, std::size_t& len) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  constexpr std::uint32_t kBad = 0xFFFFFFFF;
  len = 1;
  if (c < 0x80) return c;
  std::size_t n;
  std::uint32_t cp;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2;
    cp = c & 0x1f;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3;
    cp = c & 0x0f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4;
    cp = c & 0x07;
  } else {
    return kBad;
  }
  if (i + n > s.size()) return kBad;
  for (std::size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) return kBad;
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000))) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))) {
    return kBad;
  }
  len = n;
  return cp;
}

// Tokens per character outside ASCII, by block.
double nonAsciiCost(std::uint32_t cp) {
  if (cp == 0xFFFFFFFF) return 1.0;                    // an invalid byte
  if (cp >= 0x300 && cp < 0x370) return 1.0;           // combining marks
  if (cp < 0x250) return 0.6;                          // Latin-1, Latin Extended
  if (cp < 0x530) return 0.75;                         // Greek, Cyrillic
  if (cp < 0x590) return 1.9;                          // Armenian
  if (cp < 0x600) return 1.0;                          // Hebrew
  if (cp < 0x900) return 0.7;                          // Arabic, Syriac, Thaana
  if (cp < 0xE00) return 1.0;                          // Indic scripts
  if (cp < 0xE80) return 0.95;                         // Thai
  if (cp >= 0x10A0 && cp < 0x1400) return 2.0;         // Georgian, Hangul Jamo, Ethiopic
  if (cp >= 0x1E00 && cp < 0x2000) return 0.8;         // Latin/Greek extended (Vietnamese)
  if (cp == 0x200D || (cp >= 0xFE00 && cp < 0xFE10)) return 1.0;  // ZWJ, variation selectors
  if (cp < 0x3000) return 1.2;                         // punctuation, symbols, arrows, math
  if (cp < 0xA000) return 1.15;                        // CJK, kana
  if (cp >= 0xAC00 && cp < 0xD7B0) return 1.1;         // Hangul syllables
  if (cp >= 0xFF00 && cp < 0xFFF0) return 1.8;         // fullwidth forms
  if (cp >= 0x10000) return 2.0;                       // emoji and other astral characters
  return 1.2;
}

constexpr double kJoinedMark = 0.3;

bool isAsciiLetter(std::uint32_t c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
bool isAsciiSpace(std::uint32_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

}  // namespace

std::size_t estimateTokens(std::string_view text) {
  double tokens = 0;
  Run run = Run::None;
  std::size_t len = 0;      // of the current run
  std::size_t upper = 0;    // capitals in the current word
  std::size_t changes = 0;  // punctuation: places where the character changes
  std::size_t humps = 0;    // a word: lower case followed by a capital
  std::size_t breaks = 0;   // whitespace: newline runs
  std::size_t spaces = 0;   // whitespace: of them ' '
  std::size_t newlines = 0;  // whitespace: of them '\n' or '\r'
  std::uint32_t last = 0;

  const auto flush = [&](std::uint32_t next) {
    switch (run) {
      case Run::Word: {
        // A common word (its leading space included) is one token; longer
        // or capitalised ones split more.
        // CamelCase splits at each hump.
        const double per = upper * 2 > len ? 2.8 : 4.5;
        const double by_length = len <= 8 ? 1.0 : 1.0 + (static_cast<double>(len) - 8.0) / per;
        tokens += std::max(by_length, 1.0 + static_cast<double>(humps));
        break;
      }
      case Run::Digits:
        tokens += std::ceil(static_cast<double>(len) / 3.0);
        break;
      case Run::Punct:
        // One mark before a word (".find", "(bytes") mostly joins it.
        if (len == 1 && isAsciiLetter(next)) {
          tokens += kJoinedMark;
        } else {
          tokens += 1.0 + 0.5 * static_cast<double>(changes) + static_cast<double>(len) / 64.0;
        }
        break;
      case Run::Space: {
        // One space before a word or punctuation joins it.
        const bool joins = len == 1 && last == ' ' && next != 0 && !isAsciiSpace(next);
        if (!joins) {
          tokens += static_cast<double>(breaks > 0 ? breaks : 1) + static_cast<double>(spaces) / 100.0 +
                    static_cast<double>(len - spaces - newlines) / 16.0 + static_cast<double>(newlines) / 32.0;
        }
        break;
      }
      case Run::None:
        break;
    }
    run = Run::None;
    len = upper = humps = changes = breaks = spaces = newlines = 0;
  };

  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t n;
    const std::uint32_t c = decode(text, i, n);
    i += n;
    Run kind;
    if (c >= 0x80) {
      if (run != Run::Word) flush(c);
      tokens += nonAsciiCost(c);
      last = c;
      continue;
    }
    if (isAsciiLetter(c)) {
      kind = Run::Word;
    } else if (c >= '0' && c <= '9') {
      kind = Run::Digits;
    } else if (isAsciiSpace(c)) {
      kind = Run::Space;
    } else {
      kind = Run::Punct;
    }
    if (kind != run) {
      flush(c);
      run = kind;
    }
    ++len;
    if (kind == Run::Word && c >= 'A' && c <= 'Z') {
      ++upper;
      if (len > 1 && last >= 'a' && last <= 'z') ++humps;
    }
    if (kind == Run::Punct && len > 1 && c != last) ++changes;
    if (kind == Run::Space) {
      const bool newline = c == '\n' || c == '\r';
      if (newline && (len == 1 || (last != '\n' && last != '\r'))) ++breaks;
      spaces += c == ' ';
      newlines += newline;
    }
    last = c;
  }
  flush(0);
  if (tokens <= 0) return 0;
  return static_cast<std::size_t>(std::max(1.0, std::round(tokens)));
}

}  // namespace infermesh::tokenizer
