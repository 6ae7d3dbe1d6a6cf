#pragma once

// The trace one request belongs to. The telemetry filter starts it (from
// the caller's `traceparent`, or a new trace) when tracing is on; the
// router asks it for each attempt's `traceparent`, so the model server
// sees its parent span; the telemetry filter exports the spans at the end
// (proxy/tracing/otlp_exporter.h). Without the telemetry filter's tracing
// the router forwards the caller's trace headers as they came.
#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/filter/stream_context.h"
#include "proxy/tracing/trace_context.h"

namespace infermesh::tracing {

// One exchange with a model server, as the router saw it.
struct AttemptSpan {
  SpanId span_id{};
  std::chrono::system_clock::time_point start, end;
  std::string model;    // the Model tried
  std::string address;  // its endpoint, host:port
  std::string region;
  unsigned status = 0;  // the model server's HTTP status; 0: no response
  std::string error;    // the proxy's reason when the attempt failed (upstream_reset...)
  int number = 0;       // 1, 2... within the request
  bool fallback = false;  // on a fallback model, not the one first chosen
};

struct StreamTrace {
  TraceId trace_id{};
  SpanId span_id{};    // the request's own span
  SpanId parent_id{};  // the caller's span; zero: the request starts the trace
  std::uint8_t flags = 0;
  std::string tracestate;  // the caller's, passed on unchanged (validated)
  bool capture_content = false;  // the route opted in to prompt and completion attributes
  std::vector<AttemptSpan> attempts;

  bool sampled() const { return (flags & kSampledFlag) != 0; }

  // The `traceparent` for an attempt that starts now. A sampled trace
  // records the attempt as its own span, the model server's parent; an
  // unsampled one names the request's span and records nothing.
  std::string beginAttempt(std::string_view model, std::string_view address, std::string_view region,
                           bool fallback);
  // The outcome of the attempt begun last.
  void endAttempt(unsigned status, std::string_view error);
};

extern const filter::StateKey<StreamTrace> kStreamTrace;

}  // namespace infermesh::tracing
