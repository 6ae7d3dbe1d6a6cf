// ORCA `endpoint-load-metrics` response headers from model servers, as the
// router reads them into the load balancer's per-endpoint state.

#include <cmath>
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "proxy/upstream/load_balancer.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view header(reinterpret_cast<const char*>(data), size);
  infermesh::upstream::LoadReport r;
  if (!infermesh::upstream::parseLoadReport(header, r)) {
    FUZZ_CHECK(!r.any());
    return 0;
  }
  // The load-aware picker builds an endpoint's cost from these: a value
  // that is not a finite, non-negative number would make costs
  // incomparable. -1 means "not reported".
  for (double v : {r.running, r.waiting, r.kv_utilization, r.capacity}) FUZZ_CHECK(std::isfinite(v) && v >= -1);
  FUZZ_CHECK(r.kv_utilization <= 1);
  return 0;
}
