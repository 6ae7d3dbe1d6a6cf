#include "proxy/tracing/stream_trace.h"

namespace infermesh::tracing {

const filter::StateKey<StreamTrace> kStreamTrace;

std::string StreamTrace::beginAttempt(std::string_view model, std::string_view address, std::string_view region,
                                      bool fallback) {
  if (!sampled()) return formatTraceparent(trace_id, span_id, flags);
  AttemptSpan& a = attempts.emplace_back();
  a.span_id = newSpanId();
  a.start = std::chrono::system_clock::now();
  a.model = model;
  a.address = address;
  a.region = region;
  a.number = static_cast<int>(attempts.size());
  a.fallback = fallback;
  return formatTraceparent(trace_id, a.span_id, flags);
}

void StreamTrace::endAttempt(unsigned status, std::string_view error) {
  if (!sampled() || attempts.empty()) return;
  AttemptSpan& a = attempts.back();
  a.end = std::chrono::system_clock::now();
  a.status = status;
  a.error = error;
}

}  // namespace infermesh::tracing
