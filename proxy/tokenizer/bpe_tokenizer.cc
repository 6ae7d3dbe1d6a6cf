#include "proxy/tokenizer/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <new>
#include <unordered_map>
#include <utility>

namespace infermesh::tokenizer {
namespace {

constexpr std::uint32_t kNoRank = std::numeric_limits<std::uint32_t>::max();

// Pieces up to this many bytes are merged with tiktoken's own algorithm
// (an array of parts, a linear scan for the lowest rank per merge: O(n^2),
// fastest for short pieces); longer ones with a heap, O(n log n), so a
// prompt of one 1 MB "word" costs a fraction of a second, not many minutes. Both merge
// the lowest rank first and, among equal ranks, the leftmost pair.
#ifndef INFERMESH_BPE_SMALL_PIECE
#define INFERMESH_BPE_SMALL_PIECE 128
#endif
constexpr std::size_t kSmallPiece = INFERMESH_BPE_SMALL_PIECE;

// The split patterns, as js-tiktoken 1.0.21 carries them (`pat_str` of
// ranks/cl100k_base and ranks/o200k_base), translated to PCRE2:
//  - JavaScript's \s (WhiteSpace and LineTerminator: tab, LF, VT, FF, CR,
//    space, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F,
//    U+3000, U+FEFF) is spelled out, so \s and \S mean what they mean to
//    js-tiktoken whatever PCRE2's notion of space;
//  - the contraction groups do not capture;
//  - in cl100k, possessive quantifiers where backtracking can never find
//    another match (what tiktoken's own cl100k pattern does for speed).
// tiktoken's current Python cl100k pattern also has "\s++$" (trailing
// whitespace is one piece even across a newline); js-tiktoken's has not,
// and this follows js-tiktoken (docs/tokenizer.md).
#define IM_WS "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}"
#define IM_S "[" IM_WS "]"
#define IM_NOT_S "[^" IM_WS "]"
#define IM_CONTRACTIONS "(?:'s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)"

constexpr const char* kCl100kPattern =
    IM_CONTRACTIONS
    "|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++"
    "|\\p{N}{1,3}+"
    "| ?[^" IM_WS "\\p{L}\\p{N}]++[\\r\\n]*+"
    "|" IM_S "*[\\r\\n]+"
    "|" IM_S "+(?!" IM_NOT_S ")"
    "|" IM_S "+";

constexpr const char* kO200kPattern =
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+" IM_CONTRACTIONS "?"
    "|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*" IM_CONTRACTIONS "?"
    "|\\p{N}{1,3}"
    "| ?[^" IM_WS "\\p{L}\\p{N}]+[\\r\\n/]*"
    "|" IM_S "*[\\r\\n]+"
    "|" IM_S "+(?!" IM_NOT_S ")"
    "|" IM_S "+";

#undef IM_WS
#undef IM_S
#undef IM_NOT_S
#undef IM_CONTRACTIONS

// Keyed by the token's bytes; found by string_view without a copy.
// operator() is deliberately not noexcept: libstdc++ then keeps each key's
// hash in its node, so a lookup compares hashes before bytes.
struct BytesHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using RankMap = std::unordered_map<std::string, std::uint32_t, BytesHash, std::equal_to<>>;

// What one thread needs to match: PCRE2 match data and a JIT stack, made
// on first use, freed when the thread ends; and the heap merge's scratch.
struct ThreadState {
  pcre2_match_data* match = nullptr;
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* stack = nullptr;
  std::vector<std::uint32_t> next, prev, pair_rank;
  std::vector<std::uint64_t> heap;

  ThreadState() {
    match = pcre2_match_data_create(1, nullptr);
    context = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
    if (match == nullptr || context == nullptr || stack == nullptr) {
      release();
      throw std::bad_alloc();
    }
    pcre2_jit_stack_assign(context, nullptr, stack);
  }
  ~ThreadState() { release(); }
  ThreadState(const ThreadState&) = delete;
  ThreadState& operator=(const ThreadState&) = delete;

  void release() {
    pcre2_match_data_free(match);
    pcre2_match_context_free(context);
    pcre2_jit_stack_free(stack);
    match = nullptr;
    context = nullptr;
    stack = nullptr;
  }
};

ThreadState& threadState() {
  thread_local ThreadState state;
  return state;
}

std::string printable(std::string_view s, std::size_t max = 40) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

int base64Value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Standard base64 with its padding, as tiktoken writes it.
bool decodeBase64(std::string_view in, std::string& out) {
  out.clear();
  if (in.empty() || in.size() % 4 != 0) return false;
  std::size_t pad = 0;
  if (in.back() == '=') ++pad;
  if (in.size() >= 2 && in[in.size() - 2] == '=') ++pad;
  for (std::size_t i = 0; i < in.size(); i += 4) {
    std::uint32_t v = 0;
    const bool last = i + 4 == in.size();
    for (std::size_t j = 0; j < 4; ++j) {
      const auto c = static_cast<unsigned char>(in[i + j]);
      int d;
      if (c == '=' && last && j >= 4 - pad) {
        d = 0;
      } else {
        d = base64Value(c);
        if (d < 0) return false;
      }
      v = (v << 6) | static_cast<std::uint32_t>(d);
    }
    out += static_cast<char>((v >> 16) & 0xff);
    if (!last || pad < 2) out += static_cast<char>((v >> 8) & 0xff);
    if (!last || pad < 1) out += static_cast<char>(v & 0xff);
  }
  return true;
}

bool readFile(const std::string& path, std::string& out, std::string& error) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    error = "cannot open tokenizer file " + path + ": " + std::strerror(errno);
    return false;
  }
  out.clear();
  char buf[1 << 16];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) {
    error = "cannot read tokenizer file " + path + ": " + std::strerror(err);
    return false;
  }
  return true;
}

// The split without PCRE2 where the text is ASCII. At a position whose
// match the split pattern decides by ASCII characters alone (all it reads
// up to the character after the match), these return the match's end,
// exactly as the pattern would; at any other (a byte >= 0x80 within
// reach) 0, and PCRE2 finds that match. The regex is two thirds of the
// work on ASCII text, and these a small part of it. Each step names the
// alternative of the pattern it stands for; the unit test and the
// reference texts check them against js-tiktoken.
namespace ascii {

constexpr std::size_t kAsk = 0;  // leave this match to PCRE2 (a match is never empty)

inline bool high(unsigned char c) { return c >= 0x80; }
inline bool upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
inline bool lower(unsigned char c) { return c >= 'a' && c <= 'z'; }
inline bool letter(unsigned char c) { return upper(c) || lower(c); }
inline bool digit(unsigned char c) { return c >= '0' && c <= '9'; }
inline bool newline(unsigned char c) { return c == '\r' || c == '\n'; }
// JavaScript's \s within ASCII: tab, LF, VT, FF, CR, space.
inline bool space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
// [^\s\p{L}\p{N}] within ASCII (controls other than the spaces included).
inline bool mark(unsigned char c) { return !high(c) && !space(c) && !letter(c) && !digit(c); }

struct Text {
  const unsigned char* t;
  std::size_t n;
  unsigned char operator[](std::size_t i) const { return t[i]; }
  bool highAt(std::size_t i) const { return i < n && high(t[i]); }
};

// '(?:s|S|t|T|re|rE|Re|RE|ve|vE|Ve|VE|m|M|ll|lL|Ll|LL|d|D) at i: its length, or 0.
inline std::size_t contraction(const Text& t, std::size_t i) {
  if (i + 1 >= t.n || t[i] != '\'') return 0;
  const unsigned char a = t[i + 1] | 0x20;
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= t.n) return 0;
  const unsigned char b = t[i + 2] | 0x20;
  return ((a == 'r' || a == 'v') && b == 'e') || (a == 'l' && b == 'l') ? 3 : 0;
}

// The whitespace alternatives, the same in both patterns:
// \s*[\r\n]+ | \s+(?!\S) | \s+ at a space character i.
inline std::size_t spaces(const Text& t, std::size_t i) {
  std::size_t j = i;
  std::size_t last_newline = std::string_view::npos;
  while (j < t.n && space(t[j])) {
    if (newline(t[j])) last_newline = j;
    ++j;
  }
  if (t.highAt(j)) return kAsk;                      // the run may go on
  if (last_newline != std::string_view::npos) return last_newline + 1;  // \s*[\r\n]+
  if (j == t.n) return j;                            // \s+(?!\S) at the end
  return j - i >= 2 ? j - 1 : i + 1;                 // \s+(?!\S), else \s+ (one)
}

// \p{N}{1,3} at a digit i.
inline std::size_t digits(const Text& t, std::size_t i) {
  std::size_t j = i;
  while (j < t.n && j < i + 3 && digit(t[j])) ++j;
  return j < i + 3 && t.highAt(j) ? kAsk : j;
}

// ` ?[^\s\p{L}\p{N}]+` then `tail`* ([\r\n]* or [\r\n/]*) at i, when t[q]
// (q = i, or i + 1 after a space) is such a mark.
template <bool kSlash>
inline std::size_t marks(const Text& t, std::size_t q) {
  std::size_t j = q;
  while (j < t.n && mark(t[j])) ++j;
  if (t.highAt(j)) return kAsk;
  while (j < t.n && (newline(t[j]) || (kSlash && t[j] == '/'))) ++j;
  return j;
}

constexpr std::size_t kNoLetters = std::string_view::npos;
constexpr std::size_t kAskLetters = std::string_view::npos - 1;

// [^\r\n\p{L}\p{N}] before a letter: where the letters start (i or i + 1),
// kNoLetters when none do, kAskLetters when t[i + 1] is not ASCII.
inline std::size_t lettersStart(const Text& t, std::size_t i) {
  const unsigned char c = t[i];
  if (letter(c)) return i;
  if (newline(c) || digit(c) || i + 1 >= t.n) return kNoLetters;
  if (high(t[i + 1])) return kAskLetters;
  return letter(t[i + 1]) ? i + 1 : kNoLetters;
}

// cl100k: 'contractions | [^\r\n\p{L}\p{N}]?\p{L}+ | \p{N}{1,3} |
// ` ?[^\s\p{L}\p{N}]+[\r\n]*` | whitespace.
inline std::size_t cl100k(const Text& t, std::size_t i) {
  const unsigned char c = t[i];
  if (high(c)) return kAsk;
  if (const std::size_t k = contraction(t, i)) return i + k;
  const std::size_t p = lettersStart(t, i);
  if (p == kAskLetters) return kAsk;
  if (p != kNoLetters) {
    std::size_t j = p;
    while (j < t.n && letter(t[j])) ++j;
    return t.highAt(j) ? kAsk : j;
  }
  if (digit(c)) return digits(t, i);
  const std::size_t q = c == ' ' ? i + 1 : i;
  if (q < t.n && mark(t[q])) return marks<false>(t, q);
  if (q < t.n && high(t[q])) return kAsk;
  if (space(c)) return spaces(t, i);
  return kAsk;  // not reached: every ASCII character is one of the above
}

// o200k: [^\r\n\p{L}\p{N}]?[Lu...]*[Ll...]+'contraction? |
// [^\r\n\p{L}\p{N}]?[Lu...]+[Ll...]*'contraction? | \p{N}{1,3} |
// ` ?[^\s\p{L}\p{N}]+[\r\n/]*` | whitespace.
inline std::size_t o200k(const Text& t, std::size_t i) {
  const unsigned char c = t[i];
  if (high(c)) return kAsk;
  const std::size_t p = lettersStart(t, i);
  if (p == kAskLetters) return kAsk;
  if (p != kNoLetters) {
    std::size_t u = p;
    while (u < t.n && upper(t[u])) ++u;
    if (t.highAt(u)) return kAsk;
    std::size_t l = u;
    while (l < t.n && lower(t[l])) ++l;  // empty: the second alternative
    if (t.highAt(l)) return kAsk;
    return l + contraction(t, l);
  }
  if (digit(c)) return digits(t, i);
  const std::size_t q = c == ' ' ? i + 1 : i;
  if (q < t.n && mark(t[q])) return marks<true>(t, q);
  if (q < t.n && high(t[q])) return kAsk;
  if (space(c)) return spaces(t, i);
  return kAsk;
}

}  // namespace ascii

}  // namespace

struct BpeTokenizer::Impl {
  RankMap ranks;
  Pattern pattern = Pattern::Cl100k;
  // The rank of every two-byte token by its bytes (kNoRank when none): a
  // merge starts by ranking each adjacent byte pair, and this spares those
  // lookups the hash table (256 KB, mostly in cache).
  std::vector<std::uint32_t> byte_pairs;
  pcre2_code* re = nullptr;
  bool jit = false;

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl() { pcre2_code_free(re); }

  std::uint32_t pairRankOf(const char* two) const {
    return byte_pairs[static_cast<unsigned char>(two[0]) << 8 | static_cast<unsigned char>(two[1])];
  }

  std::uint32_t rankOf(std::string_view bytes) const {
    const auto it = ranks.find(bytes);
    return it == ranks.end() ? kNoRank : it->second;
  }

  // Calls piece(bytes) for each piece of the split, in order.
  template <class OnPiece>
  void split(std::string_view text, OnPiece&& piece) const {
    ThreadState& ts = threadState();
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    const std::size_t n = text.size();
    const ascii::Text t{reinterpret_cast<const unsigned char*>(text.data()), n};
    std::size_t offset = 0;
    while (offset < n) {
#ifndef INFERMESH_BPE_NO_ASCII_SPLIT
      const std::size_t ascii_end = pattern == Pattern::Cl100k ? ascii::cl100k(t, offset) : ascii::o200k(t, offset);
      if (ascii_end != ascii::kAsk) {
        piece(text.substr(offset, ascii_end - offset));
        offset = ascii_end;
        continue;
      }
#endif
      const int rc = jit ? pcre2_jit_match(re, subject, n, offset, 0, ts.match, ts.context)
                         : pcre2_match(re, subject, n, offset, 0, ts.match, ts.context);
      if (rc < 0) {
        // No match: only invalid UTF-8 is left. Any other error (a match
        // limit; not expected with these patterns): the rest is one piece,
        // so the count stays close and nothing crashes.
        piece(text.substr(offset));
        return;
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(ts.match);
      const std::size_t begin = ov[0];
      const std::size_t end = ov[1];
      if (begin > offset) piece(text.substr(offset, begin - offset));  // invalid UTF-8
      if (end <= begin) {  // an empty match; these patterns have none
        if (begin >= n) return;
        piece(text.substr(begin, 1));
        offset = begin + 1;
        continue;
      }
      piece(text.substr(begin, end - begin));
      offset = end;
    }
  }

  // Byte-pair merge of a piece (2 bytes or more) not itself in the table;
  // part(bytes) for each resulting token, in order.
  template <class OnPart>
  void merge(std::string_view piece, OnPart&& part) const {
    if (piece.size() <= kSmallPiece) {
      mergeSmall(piece, part);
    } else {
      mergeLarge(piece, part);
    }
  }

  // tiktoken's byte_pair_merge: parts[i] is a part's first byte and the
  // rank of it merged with the next part.
  template <class OnPart>
  void mergeSmall(std::string_view piece, OnPart& part) const {
    struct Part {
      std::uint32_t start;
      std::uint32_t rank;
    };
    Part parts[kSmallPiece + 1];
    const auto n = static_cast<std::uint32_t>(piece.size());
    std::size_t len = 0;
    for (std::uint32_t i = 0; i + 1 < n; ++i) parts[len++] = {i, pairRankOf(piece.data() + i)};
    parts[len++] = {n - 1, kNoRank};
    parts[len++] = {n, kNoRank};
    const auto pairRank = [&](std::size_t i) {
      return i + 3 < len ? rankOf(piece.substr(parts[i].start, parts[i + 3].start - parts[i].start)) : kNoRank;
    };
    for (;;) {
      std::uint32_t min_rank = kNoRank;
      std::size_t min_i = 0;
      for (std::size_t i = 0; i + 1 < len; ++i) {
        if (parts[i].rank < min_rank) {
          min_rank = parts[i].rank;
          min_i = i;
        }
      }
      if (min_rank == kNoRank) break;
      if (min_i > 0) parts[min_i - 1].rank = pairRank(min_i - 1);
      parts[min_i].rank = pairRank(min_i);
      std::memmove(&parts[min_i + 1], &parts[min_i + 2], (len - min_i - 2) * sizeof(Part));
      --len;
    }
    for (std::size_t i = 0; i + 1 < len; ++i) part(piece.substr(parts[i].start, parts[i + 1].start - parts[i].start));
  }

  // The same merge order with a min-heap of candidate pairs over a linked
  // list of parts. A candidate is (rank << 32 | position of its left part),
  // so the heap's least is the lowest rank, leftmost. rank[left] is the
  // rank of the pair now starting at `left`; a popped candidate whose rank
  // differs is stale (a pair only grows, and a rank names one byte string).
  template <class OnPart>
  void mergeLarge(std::string_view piece, OnPart& part) const {
    ThreadState& ts = threadState();
    const auto n = static_cast<std::uint32_t>(piece.size());
    auto& next = ts.next;  // next[start] = the next part's start; 0 once absorbed
    auto& prev = ts.prev;
    auto& pair_rank = ts.pair_rank;
    auto& heap = ts.heap;
    next.resize(n);
    prev.resize(n);
    pair_rank.resize(n);
    heap.clear();
    const auto candidate = [](std::uint32_t rank, std::uint32_t left) {
      return (static_cast<std::uint64_t>(rank) << 32) | left;
    };
    for (std::uint32_t i = 0; i < n; ++i) {
      next[i] = i + 1;
      prev[i] = i == 0 ? 0 : i - 1;
      pair_rank[i] = i + 1 < n ? pairRankOf(piece.data() + i) : kNoRank;
      if (pair_rank[i] != kNoRank) heap.push_back(candidate(pair_rank[i], i));
    }
    std::make_heap(heap.begin(), heap.end(), std::greater<>());
    // The pair at `left` (a live part) is now [left, end).
    const auto repair = [&](std::uint32_t left, std::uint32_t end) {
      const std::uint32_t r = end > n ? kNoRank : rankOf(piece.substr(left, end - left));
      pair_rank[left] = r;
      if (r == kNoRank) return;
      heap.push_back(candidate(r, left));
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    };
    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), std::greater<>());
      const std::uint64_t c = heap.back();
      heap.pop_back();
      const auto left = static_cast<std::uint32_t>(c);
      const auto rank = static_cast<std::uint32_t>(c >> 32);
      if (next[left] == 0 || pair_rank[left] != rank) continue;  // stale
      const std::uint32_t mid = next[left];
      const std::uint32_t end = next[mid];  // mid < n: the pair has a rank
      next[left] = end;
      next[mid] = 0;
      if (end < n) prev[end] = left;
      if (left > 0) repair(prev[left], end);
      repair(left, end < n ? next[end] : n + 1);
    }
    for (std::uint32_t i = 0; i < n; i = next[i]) part(piece.substr(i, next[i] - i));
  }

  std::size_t count(std::string_view text) const {
    std::size_t total = 0;
    split(text, [&](std::string_view piece) {
      if (piece.size() == 1 || ranks.find(piece) != ranks.end()) {
        ++total;
        return;
      }
      merge(piece, [&](std::string_view) { ++total; });
    });
    return total;
  }

  std::vector<std::uint32_t> encode(std::string_view text) const {
    std::vector<std::uint32_t> out;
    split(text, [&](std::string_view piece) {
      if (const std::uint32_t r = rankOf(piece); r != kNoRank) {
        out.push_back(r);
        return;
      }
      merge(piece, [&](std::string_view bytes) { out.push_back(rankOf(bytes)); });
    });
    return out;
  }
};

std::optional<Pattern> patternFor(std::string_view encoding_name) {
  if (encoding_name == "cl100k_base") return Pattern::Cl100k;
  if (encoding_name == "o200k_base") return Pattern::O200k;
  return std::nullopt;
}

std::shared_ptr<const BpeTokenizer> BpeTokenizer::load(const std::string& path, Pattern pattern, std::string& error) {
  std::string text;
  if (!readFile(path, text, error)) return nullptr;

  auto impl = std::make_shared<Impl>();
  std::size_t lines = 0;
  for (std::size_t p = 0; p < text.size(); ++p) lines += text[p] == '\n';
  impl->ranks.reserve(lines + 1);

  std::vector<std::pair<std::uint32_t, std::uint32_t>> seen;  // (rank, line)
  seen.reserve(lines + 1);
  std::string bytes;
  std::uint32_t line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    std::string_view line(text.data() + pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const std::string where = path + ":" + std::to_string(line_no) + ": ";
    const std::size_t space = line.find(' ');
    if (space == std::string_view::npos || line.find(' ', space + 1) != std::string_view::npos) {
      error = where + "expected \"<base64 token> <rank>\", got \"" + printable(line) + "\"";
      return nullptr;
    }
    const std::string_view token = line.substr(0, space);
    const std::string_view rank_text = line.substr(space + 1);
    if (!decodeBase64(token, bytes)) {
      error = where + "invalid base64 token \"" + printable(token) + "\"";
      return nullptr;
    }
    std::uint64_t rank = 0;
    const auto [end, ec] = std::from_chars(rank_text.data(), rank_text.data() + rank_text.size(), rank);
    if (rank_text.empty() || ec != std::errc() || end != rank_text.data() + rank_text.size() || rank >= kNoRank) {
      error = where + "invalid rank \"" + printable(rank_text) + "\" (a decimal number below 4294967295)";
      return nullptr;
    }
    const auto [it, inserted] = impl->ranks.try_emplace(bytes, static_cast<std::uint32_t>(rank));
    if (!inserted) {
      error = where + "token \"" + printable(token) + "\" again (it already has rank " + std::to_string(it->second) +
              ")";
      return nullptr;
    }
    seen.emplace_back(static_cast<std::uint32_t>(rank), line_no);
  }
  if (impl->ranks.empty()) {
    error = path + ": no ranks in the tokenizer file";
    return nullptr;
  }
  std::sort(seen.begin(), seen.end());
  for (std::size_t i = 1; i < seen.size(); ++i) {
    if (seen[i].first == seen[i - 1].first) {
      error = path + ":" + std::to_string(seen[i].second) + ": rank " + std::to_string(seen[i].first) +
              " again (also on line " + std::to_string(seen[i - 1].second) + ")";
      return nullptr;
    }
  }
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    if (impl->ranks.find(std::string_view(&c, 1)) == impl->ranks.end()) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "0x%02x", b);
      error = path + ": no token for the single byte " + hex + "; not a byte-level BPE rank file";
      return nullptr;
    }
  }

  impl->pattern = pattern;
  impl->byte_pairs.assign(1u << 16, kNoRank);
  for (const auto& [token, rank] : impl->ranks) {
    if (token.size() == 2) {
      impl->byte_pairs[static_cast<unsigned char>(token[0]) << 8 | static_cast<unsigned char>(token[1])] = rank;
    }
  }

  const char* pat = pattern == Pattern::Cl100k ? kCl100kPattern : kO200kPattern;
  int code = 0;
  PCRE2_SIZE offset = 0;
  impl->re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pat), PCRE2_ZERO_TERMINATED,
                           PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &code, &offset, nullptr);
  if (impl->re == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(code, msg, sizeof msg);
    error = std::string("cannot compile the split pattern at ") + std::to_string(offset) + ": " +
            reinterpret_cast<const char*>(msg);
    return nullptr;
  }
  impl->jit = pcre2_jit_compile(impl->re, PCRE2_JIT_COMPLETE) == 0;
  return std::shared_ptr<const BpeTokenizer>(new BpeTokenizer(std::move(impl)));
}

std::size_t BpeTokenizer::count(std::string_view text) const { return impl_->count(text); }

std::vector<std::uint32_t> BpeTokenizer::encode(std::string_view text) const { return impl_->encode(text); }

std::shared_ptr<const BpeTokenizer> loadCached(const std::string& path, Pattern pattern, std::string& error) {
  static std::mutex mu;
  static std::map<std::pair<std::string, Pattern>, std::shared_ptr<const BpeTokenizer>> loaded;
  // Held while loading, so two callers of one file read it once.
  std::lock_guard lock(mu);
  auto key = std::make_pair(path, pattern);
  if (const auto it = loaded.find(key); it != loaded.end()) return it->second;
  auto tok = BpeTokenizer::load(path, pattern, error);
  if (tok) loaded.emplace(std::move(key), tok);
  return tok;
}

}  // namespace infermesh::tokenizer
