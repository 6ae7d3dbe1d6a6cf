#include "proxy/tokenizer/bpe_tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#ifndef INFERMESH_NPM_DIR
#error "INFERMESH_NPM_DIR: the directory tests/npm/install.sh fills (build/npm)"
#endif
#ifndef INFERMESH_SOURCE_DIR
#error "INFERMESH_SOURCE_DIR: the source tree"
#endif

namespace infermesh::tokenizer {
namespace {

const std::string kNpmDir = INFERMESH_NPM_DIR;
const std::string kCorpus = std::string(INFERMESH_SOURCE_DIR) + "/tests/data/tokenizer_corpus.jsonl";
const char* const kInstallHint = "; run tests/npm/install.sh (README command 2 does) to install js-tiktoken and "
                                 "write the rank files and reference token ids";

std::string rankFile(const std::string& encoding) { return kNpmDir + "/ranks/" + encoding + ".tiktoken"; }
std::string referenceFile(const std::string& encoding) { return kNpmDir + "/reference/" + encoding + ".jsonl"; }

std::string readAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string::npos) eol = text.size();
    out.push_back(text.substr(pos, eol - pos));
    pos = eol + 1;
  }
  return out;
}

void appendUtf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// A JSON string literal (the whole line) to its UTF-8 bytes.
bool decodeJsonString(const std::string& line, std::string& out) {
  out.clear();
  if (line.size() < 2 || line.front() != '"' || line.back() != '"') return false;
  const auto hex4 = [&](std::size_t at, std::uint32_t& v) {
    if (at + 4 > line.size() - 1) return false;
    v = 0;
    for (std::size_t k = at; k < at + 4; ++k) {
      const char c = line[k];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<std::uint32_t>(c - 'A' + 10);
      else return false;
    }
    return true;
  };
  for (std::size_t i = 1; i + 1 < line.size(); ++i) {
    const char c = line[i];
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++i + 1 > line.size() - 1) return false;
    switch (line[i]) {
      case '"': out += '"'; break;
      case '\\': out += '\\'; break;
      case '/': out += '/'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 't': out += '\t'; break;
      case 'u': {
        std::uint32_t cp;
        if (!hex4(i + 1, cp)) return false;
        i += 4;
        if (cp >= 0xd800 && cp < 0xdc00) {
          std::uint32_t lo;
          if (i + 2 >= line.size() || line[i + 1] != '\\' || line[i + 2] != 'u' || !hex4(i + 3, lo) || lo < 0xdc00 ||
              lo >= 0xe000)
            return false;  // a lone surrogate has no UTF-8
          i += 6;
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else if (cp >= 0xdc00 && cp < 0xe000) {
          return false;
        }
        appendUtf8(out, cp);
        break;
      }
      default: return false;
    }
  }
  return true;
}

std::vector<std::string> corpus() {
  std::vector<std::string> texts;
  const auto all = lines(readAll(kCorpus));
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (all[i].empty()) continue;
    std::string text;
    EXPECT_TRUE(decodeJsonString(all[i], text)) << kCorpus << ":" << i + 1 << ": not a JSON string";
    texts.push_back(std::move(text));
  }
  return texts;
}

struct Reference {
  std::size_t line = 0;
  std::size_t count = 0;
  std::vector<std::uint32_t> ids;
};

// {"line":N,"count":C,"ids":[...]} a line, as reference_counts.mjs writes.
std::vector<Reference> reference(const std::string& encoding) {
  std::vector<Reference> out;
  for (const auto& line : lines(readAll(referenceFile(encoding)))) {
    if (line.empty()) continue;
    Reference r;
    const auto number = [&](const char* key) -> std::size_t {
      const auto at = line.find(key);
      return at == std::string::npos ? 0 : std::stoul(line.substr(at + std::strlen(key)));
    };
    r.line = number("\"line\":");
    r.count = number("\"count\":");
    const auto open = line.find("\"ids\":[");
    const auto close = line.find(']', open);
    if (open == std::string::npos || close == std::string::npos) {
      ADD_FAILURE() << referenceFile(encoding) << ": bad line " << line;
      return {};
    }
    std::istringstream ids(line.substr(open + 7, close - open - 7));
    std::string id;
    while (std::getline(ids, id, ',')) r.ids.push_back(static_cast<std::uint32_t>(std::stoul(id)));
    out.push_back(std::move(r));
  }
  return out;
}

std::string printable(std::string_view s, std::size_t max = 120) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20) out += "\\x" + std::to_string(c);
    else out += static_cast<char>(c);
  }
  if (s.size() > max) out += "...(" + std::to_string(s.size()) + " bytes)";
  return out;
}

std::string join(const std::vector<std::uint32_t>& v) {
  std::string out;
  for (auto x : v) out += (out.empty() ? "" : ",") + std::to_string(x);
  return out;
}

// rank -> bytes, read from a rank file independently of the tokenizer.
std::unordered_map<std::uint32_t, std::string> decoder(const std::string& path) {
  static const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::unordered_map<std::uint32_t, std::string> out;
  for (const auto& line : lines(readAll(path))) {
    const auto space = line.find(' ');
    if (space == std::string::npos) continue;
    std::string bytes;
    std::uint32_t acc = 0;
    int bits = 0;
    for (std::size_t i = 0; i < space && line[i] != '='; ++i) {
      acc = (acc << 6) | static_cast<std::uint32_t>(alphabet.find(line[i]));
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        bytes += static_cast<char>((acc >> bits) & 0xff);
      }
    }
    out[static_cast<std::uint32_t>(std::stoul(line.substr(space + 1)))] = bytes;
  }
  return out;
}

class Encoding : public ::testing::TestWithParam<std::string> {
 protected:
  std::shared_ptr<const BpeTokenizer> tokenizer() {
    const std::string path = rankFile(GetParam());
    if (!std::filesystem::exists(path)) {
      ADD_FAILURE() << path << " is missing" << kInstallHint;
      return nullptr;
    }
    std::string error;
    auto tok = loadCached(path, *patternFor(GetParam()), error);
    EXPECT_TRUE(tok) << error;
    return tok;
  }
};

TEST_P(Encoding, IdenticalToJsTiktokenOnTheCorpus) {
  const auto tok = tokenizer();
  if (!tok) return;
  if (!std::filesystem::exists(referenceFile(GetParam()))) {
    FAIL() << referenceFile(GetParam()) << " is missing" << kInstallHint;
  }
  const auto texts = corpus();
  const auto ref = reference(GetParam());
  ASSERT_GE(texts.size(), 100u);
  ASSERT_EQ(ref.size(), texts.size()) << referenceFile(GetParam()) << " is not of this corpus" << kInstallHint;
  std::size_t tokens = 0;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const auto ids = tok->encode(texts[i]);
    EXPECT_EQ(ids, ref[i].ids) << "corpus line " << ref[i].line << ": \"" << printable(texts[i]) << "\"\n  ours: ["
                               << join(ids) << "]\n  js-tiktoken: [" << join(ref[i].ids) << "]";
    EXPECT_EQ(tok->count(texts[i]), ref[i].count) << "corpus line " << ref[i].line;
    tokens += ref[i].count;
  }
  std::printf("[          ] %s: %zu texts, %zu tokens, identical to js-tiktoken\n", GetParam().c_str(), texts.size(),
              tokens);
}

// {"text": ..., "ids": [...]} a line: 5000 random texts where the split
// pattern's corner cases hide (reference_counts.mjs).
TEST_P(Encoding, IdenticalToJsTiktokenOnRandomTexts) {
  const auto tok = tokenizer();
  if (!tok) return;
  const std::string path = kNpmDir + "/reference/" + GetParam() + ".random.jsonl";
  if (!std::filesystem::exists(path)) FAIL() << path << " is missing" << kInstallHint;
  std::size_t n = 0, bad = 0;
  for (const auto& line : lines(readAll(path))) {
    if (line.empty()) continue;
    const auto ids_at = line.rfind(",\"ids\":[");
    ASSERT_TRUE(line.rfind("{\"text\":", 0) == 0 && ids_at != std::string::npos && line.back() == '}') << line;
    std::string text;
    ASSERT_TRUE(decodeJsonString(line.substr(8, ids_at - 8), text)) << line;
    std::vector<std::uint32_t> want;
    std::istringstream ids(line.substr(ids_at + 8, line.size() - ids_at - 10));
    std::string id;
    while (std::getline(ids, id, ',')) want.push_back(static_cast<std::uint32_t>(std::stoul(id)));
    ++n;
    const auto got = tok->encode(text);
    if (got != want || tok->count(text) != want.size()) {
      if (++bad <= 10) ADD_FAILURE() << path << ": \"" << printable(text) << "\"\n  ours: [" << join(got)
                                     << "]\n  js-tiktoken: [" << join(want) << "]";
    }
  }
  EXPECT_GE(n, 1000u);
  EXPECT_EQ(bad, 0u) << "of " << n;
}

TEST_P(Encoding, EmptyTextIsNoTokens) {
  const auto tok = tokenizer();
  if (!tok) return;
  EXPECT_EQ(tok->count(""), 0u);
  EXPECT_TRUE(tok->encode("").empty());
}

// Not valid UTF-8: counted, never a crash; the tokens still spell the input
// byte for byte.
TEST_P(Encoding, InvalidUtf8IsCountedByteForByte) {
  const auto tok = tokenizer();
  if (!tok) return;
  const auto dec = decoder(rankFile(GetParam()));
  const std::vector<std::string> inputs = {
      "\xff",
      "\xc3",                          // truncated
      "\xe4\xbd",                      // truncated CJK
      "abc\xff\xfe def",
      "\xc0\xaf overlong",
      "\xed\xa0\x80 surrogate",
      "\xf4\x90\x80\x80 above U+10FFFF",
      "caf\xc3\xa9 \xe2\x82 \xf0\x9f\x98",
      "  \xff  \n\xff\n",
      "I'\xffm \x80\x80\x80 done",
      std::string("nul\0byte", 8),
  };
  for (const auto& s : inputs) {
    const auto n = tok->count(s);
    EXPECT_GT(n, 0u) << printable(s);
    const auto ids = tok->encode(s);
    EXPECT_EQ(ids.size(), n) << printable(s);
    std::string back;
    for (auto id : ids) back += dec.at(id);
    EXPECT_EQ(back, s);
  }
  // Random bytes.
  std::mt19937 rng(7);
  for (int round = 0; round < 50; ++round) {
    std::string s(1 + rng() % 300, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    const auto ids = tok->encode(s);
    EXPECT_EQ(tok->count(s), ids.size());
    std::string back;
    for (auto id : ids) back += dec.at(id);
    ASSERT_EQ(back, s) << "round " << round;
  }
}

// One huge piece is merged in O(n log n): 256 KB of one character takes
// tens of milliseconds (quadratic merging would take minutes), and its
// tokens spell it.
TEST_P(Encoding, HugePiecesAreFast) {
  const auto tok = tokenizer();
  if (!tok) return;
  const auto dec = decoder(rankFile(GetParam()));
  for (const std::string& s : {std::string(1 << 18, 'a'), std::string(1 << 18, ' '), std::string(1 << 18, '\n'),
                               std::string(1 << 18, '=') + "x"}) {
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok->encode(s);
    const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(seconds, 10.0);  // generous: sanitizer builds are slow
    std::string back;
    for (auto id : ids) back += dec.at(id);
    EXPECT_EQ(back, s);
    EXPECT_EQ(tok->count(s), ids.size());
  }
}

TEST_P(Encoding, CountsFromManyThreadsAlike) {
  const auto tok = tokenizer();
  if (!tok) return;
  const auto texts = corpus();
  std::vector<std::size_t> want;
  for (const auto& t : texts) want.push_back(tok->count(t));
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round)
        for (std::size_t i = 0; i < texts.size(); ++i) bad[t] += tok->count(texts[i]) != want[i];
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(bad[t], 0) << "thread " << t;
}

INSTANTIATE_TEST_SUITE_P(Tiktoken, Encoding, ::testing::Values("cl100k_base", "o200k_base"),
                         [](const auto& info) { return info.param; });

TEST(BpeTokenizer, PatternNames) {
  EXPECT_EQ(patternFor("cl100k_base"), Pattern::Cl100k);
  EXPECT_EQ(patternFor("o200k_base"), Pattern::O200k);
  EXPECT_EQ(patternFor("p50k_base"), std::nullopt);
  EXPECT_EQ(patternFor(""), std::nullopt);
}

TEST(BpeTokenizer, LoadCachedSharesOneTokenizer) {
  const std::string path = rankFile("cl100k_base");
  if (!std::filesystem::exists(path)) FAIL() << path << " is missing" << kInstallHint;
  std::string error;
  const auto a = loadCached(path, Pattern::Cl100k, error);
  const auto b = loadCached(path, Pattern::Cl100k, error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(a, b);
  EXPECT_NE(loadCached(path, Pattern::O200k, error), a);
}

class LoadErrors : public ::testing::Test {
 protected:
  std::string write(const std::string& name, const std::string& text) {
    const std::string path = ::testing::TempDir() + "/infermesh-bpe-" + name;
    std::ofstream(path, std::ios::binary) << text;
    paths_.push_back(path);
    return path;
  }
  void TearDown() override {
    for (const auto& p : paths_) std::filesystem::remove(p);
  }
  // Every single byte, base64, ranks 0..255: a minimal valid file.
  static std::string bytes() {
    static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    for (int b = 0; b < 256; ++b) {
      out += alphabet[b >> 2];
      out += alphabet[(b & 3) << 4];
      out += "== " + std::to_string(b) + "\n";
    }
    return out;
  }
  std::string load(const std::string& path) {
    std::string error;
    auto tok = BpeTokenizer::load(path, Pattern::Cl100k, error);
    EXPECT_FALSE(tok) << path;
    return error;
  }
  std::vector<std::string> paths_;
};

TEST_F(LoadErrors, MinimalFileLoads) {
  std::string error;
  const auto tok = BpeTokenizer::load(write("ok", bytes() + "YWI= 256\r\n\n"), Pattern::Cl100k, error);
  ASSERT_TRUE(tok) << error;
  EXPECT_EQ(tok->count("ab"), 1u);  // "ab" is rank 256
  EXPECT_EQ(tok->encode("abc"), (std::vector<std::uint32_t>{256, 'c'}));
}

TEST_F(LoadErrors, MissingFile) {
  const auto error = load("/nonexistent/cl100k_base.tiktoken");
  EXPECT_NE(error.find("/nonexistent/cl100k_base.tiktoken"), std::string::npos) << error;
  EXPECT_NE(error.find("No such file"), std::string::npos) << error;
}

TEST_F(LoadErrors, BadBase64) {
  const auto path = write("b64", bytes() + "YW!= 256\n");
  EXPECT_EQ(load(path), path + ":257: invalid base64 token \"YW!=\"");
  const auto path2 = write("b64len", bytes() + "YWI 256\n");
  EXPECT_EQ(load(path2), path2 + ":257: invalid base64 token \"YWI\"");
}

TEST_F(LoadErrors, BadRank) {
  for (const char* rank : {"x1", "-1", "12a", "", "4294967295", "99999999999"}) {
    const auto path = write("rank", bytes() + "YWI= " + std::string(rank) + "\n");
    EXPECT_EQ(load(path), path + ":257: invalid rank \"" + std::string(rank) + "\" (a decimal number below 4294967295)");
  }
}

TEST_F(LoadErrors, Garbled) {
  auto path = write("fields", "QQ==\n");
  EXPECT_EQ(load(path), path + ":1: expected \"<base64 token> <rank>\", got \"QQ==\"");
  path = write("binary", std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(load(path), path + ":1: expected \"<base64 token> <rank>\", got \"\\x89PNG\"");
  path = write("empty", "");
  EXPECT_EQ(load(path), path + ": no ranks in the tokenizer file");
  path = write("dup-token", bytes() + "QQ== 300\n");
  EXPECT_EQ(load(path), path + ":257: token \"QQ==\" again (it already has rank 65)");
  path = write("dup-rank", bytes() + "YWI= 7\n");
  EXPECT_EQ(load(path), path + ":257: rank 7 again (also on line 8)");
  path = write("no-byte", "QQ== 0\n");
  EXPECT_EQ(load(path), path + ": no token for the single byte 0x00; not a byte-level BPE rank file");
}

// The estimate against cl100k_base on the corpus: mean absolute relative
// error per text (docs/tokenizer.md has the figure).
TEST(EstimateTokens, WithinItsMeasuredErrorOfCl100k) {
  EXPECT_EQ(estimateTokens(""), 0u);
  EXPECT_GT(estimateTokens("a"), 0u);
  EXPECT_GT(estimateTokens("\xff\xfe"), 0u);
  const std::string path = rankFile("cl100k_base");
  if (!std::filesystem::exists(referenceFile("cl100k_base"))) {
    FAIL() << referenceFile("cl100k_base") << " is missing" << kInstallHint;
  }
  const auto texts = corpus();
  const auto ref = reference("cl100k_base");
  ASSERT_EQ(ref.size(), texts.size());
  double sum = 0, worst = 0;
  std::size_t n = 0, worst_line = 0, est_total = 0, ref_total = 0;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    if (ref[i].count == 0) {
      EXPECT_EQ(estimateTokens(texts[i]), 0u);
      continue;
    }
    const double est = static_cast<double>(estimateTokens(texts[i]));
    const double err = std::fabs(est - static_cast<double>(ref[i].count)) / static_cast<double>(ref[i].count);
    sum += err;
    ++n;
    est_total += static_cast<std::size_t>(est);
    ref_total += ref[i].count;
    if (err > worst) {
      worst = err;
      worst_line = ref[i].line;
    }
  }
  const double mean = sum / static_cast<double>(n);
  std::printf("[          ] estimateTokens vs cl100k_base: mean |error| %.1f%% over %zu texts, worst %.0f%% (line %zu), "
              "total %zu vs %zu tokens\n",
              100 * mean, n, 100 * worst, worst_line, est_total, ref_total);
  EXPECT_LT(mean, 0.18);  // measured: 14.2%
}

}  // namespace
}  // namespace infermesh::tokenizer
