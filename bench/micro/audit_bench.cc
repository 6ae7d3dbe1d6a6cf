// What a request thread pays to hand one audit record to the writer:
// AuditLog::submit() from 1 and 2 threads, including the copy of a typical
// ~300-byte record (the caller builds one string per decision). The writer
// runs at the same time and writes to a file under /tmp. Producers in a
// tight loop outrun any disk, so when the queue is full the clock stops
// while it drains (flush): the figure is the cost of accepted submits, not
// of the cheaper drop; "full" counts those pauses per iteration.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "proxy/audit/audit_log.h"

namespace infermesh::audit {
namespace {

std::shared_ptr<AuditLog> g_log;
std::string g_path;

void BM_AuditSubmit(benchmark::State& state) {
  if (state.thread_index() == 0) {
    g_path = "/tmp/infermesh-audit-bench-" + std::to_string(::getpid()) + ".log";
    std::filesystem::remove(g_path);
    AuditLogOptions o;
    o.path = g_path;
    o.max_bytes = 64ull << 20;
    o.keep_files = 1;
    std::string error;
    g_log = AuditLog::open(o, error);
    if (!g_log) state.SkipWithError(error.c_str());
  }
  const std::string record =
      "\"time\":\"2026-01-01T00:00:00.000Z\",\"request_id\":\"5f0c1d2e-aaaa-bbbb-cccc-0123456789ab\","
      "\"tenant\":\"team-a\",\"principal\":\"spiffe://mesh/ns/a/sa/chat\",\"model\":\"chat-model\","
      "\"route\":\"api\",\"decision\":\"allow\",\"rule\":\"tenants-allow\"";
  std::uint64_t full = 0;
  for (auto _ : state) {
    if (!g_log) break;
    if (!g_log->submit(record)) {
      state.PauseTiming();
      ++full;
      g_log->flush();
      state.ResumeTiming();
    }
  }
  state.counters["full"] = benchmark::Counter(static_cast<double>(full), benchmark::Counter::kAvgIterations);
  if (state.thread_index() == 0 && g_log) {
    g_log->flush();
    g_log.reset();
    std::filesystem::remove(g_path);
    std::filesystem::remove(g_path + ".1");
  }
}
BENCHMARK(BM_AuditSubmit)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace
}  // namespace infermesh::audit
