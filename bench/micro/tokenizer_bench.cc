// Token counting (docs/tokenizer.md): BpeTokenizer::count with the
// cl100k_base and o200k_base rank files tests/npm/install.sh writes, on
// English prose (this repository's docs/*.md), on C++ (proxy/ sources) and
// on the tokenizer test corpus (many scripts, emoji, long runs); and the
// estimate without a rank file on the same prose. Bytes per second, and
// ns per token (the counter "ns_per_token").
#include <benchmark/benchmark.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "proxy/tokenizer/bpe_tokenizer.h"

namespace infermesh::tokenizer {
namespace {

std::string readAll(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Up to 1 MiB of whole lines: the files of `dir` ending in `ext`, repeated.
const std::string& text(const std::string& dir, const std::string& ext) {
  static std::map<std::string, std::string> texts;
  auto& t = texts[dir + ext];
  if (t.empty()) {
    std::string once;
    for (const auto& e : std::filesystem::recursive_directory_iterator(std::string(INFERMESH_SOURCE_DIR) + "/" + dir)) {
      if (e.is_regular_file() && e.path().extension() == ext) once += readAll(e.path());
    }
    while (!once.empty() && t.size() < (1u << 20)) t += once;
    if (t.size() > (1u << 20)) t.resize(t.rfind('\n', 1u << 20) + 1);  // whole lines, at most 1 MiB
  }
  return t;
}

std::shared_ptr<const BpeTokenizer> tokenizer(const std::string& encoding, benchmark::State& state) {
  std::string error;
  auto tok = loadCached(std::string(INFERMESH_NPM_DIR) + "/ranks/" + encoding + ".tiktoken", *patternFor(encoding),
                        error);
  if (!tok) state.SkipWithError((error + " (run tests/npm/install.sh)").c_str());
  return tok;
}

void countOn(benchmark::State& state, const std::string& encoding, const std::string& t) {
  const auto tok = tokenizer(encoding, state);
  if (!tok || t.empty()) {
    if (t.empty()) state.SkipWithError("no text");
    return;
  }
  std::size_t tokens = 0;
  for (auto _ : state) {
    tokens = tok->count(t);
    benchmark::DoNotOptimize(tokens);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * t.size()));
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["ns_per_token"] = benchmark::Counter(static_cast<double>(state.iterations() * tokens),
                                                      benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void BM_TokenCountProse(benchmark::State& state, const char* encoding) {
  countOn(state, encoding, text("docs", ".md"));
}
void BM_TokenCountCode(benchmark::State& state, const char* encoding) {
  countOn(state, encoding, text("proxy", ".cc"));
}
void BM_TokenCountCorpus(benchmark::State& state, const char* encoding) {
  countOn(state, encoding, text("tests/data", ".jsonl"));
}
BENCHMARK_CAPTURE(BM_TokenCountProse, cl100k, "cl100k_base")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TokenCountProse, o200k, "o200k_base")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TokenCountCode, cl100k, "cl100k_base")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TokenCountCode, o200k, "o200k_base")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TokenCountCorpus, cl100k, "cl100k_base")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_TokenCountCorpus, o200k, "o200k_base")->Unit(benchmark::kMillisecond);

// A typical chat prompt: a few hundred bytes, the per-request cost.
void BM_TokenCountPrompt(benchmark::State& state) {
  const std::string prompt =
      "You are a helpful assistant. Summarize the following support ticket in two sentences and suggest a next "
      "step.\n\nTicket: The customer reports that since Tuesday's update, exporting a report to PDF fails with "
      "error 0x80070005 on Windows 11; CSV export still works. They've restarted twice and reinstalled.";
  countOn(state, "cl100k_base", prompt);
}
BENCHMARK(BM_TokenCountPrompt);

void BM_TokenEstimateProse(benchmark::State& state) {
  const std::string& t = text("docs", ".md");
  std::size_t tokens = 0;
  for (auto _ : state) {
    tokens = estimateTokens(t);
    benchmark::DoNotOptimize(tokens);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * t.size()));
  state.counters["tokens"] = static_cast<double>(tokens);
}
BENCHMARK(BM_TokenEstimateProse)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace infermesh::tokenizer
