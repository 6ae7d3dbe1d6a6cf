// W3C trace context from clients (traceparent, tracestate) and the access
// log's body fields. Input: a traceparent candidate, a NUL, a tracestate
// candidate, a NUL, a JSON body.

#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "proxy/config/access_log.h"
#include "proxy/tracing/trace_context.h"

using namespace infermesh;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto next = [&] {
    const auto cut = in.find('\0');
    const std::string_view part = in.substr(0, cut);
    in = cut == std::string_view::npos ? std::string_view{} : in.substr(cut + 1);
    return part;
  };
  const std::string_view parent = next();
  const std::string_view state = next();

  if (const auto p = tracing::parseTraceparent(parent)) {
    FUZZ_CHECK(!tracing::isZero(p->trace_id) && !tracing::isZero(p->parent_id));
    // What the proxy writes back is version 00 and reads as the same context.
    const std::string written = tracing::formatTraceparent(p->trace_id, p->parent_id, p->flags);
    FUZZ_CHECK(written.size() == 55);
    const auto again = tracing::parseTraceparent(written);
    FUZZ_CHECK(again && again->trace_id == p->trace_id && again->parent_id == p->parent_id && again->flags == p->flags);
    if (parent.starts_with("00-")) FUZZ_CHECK(written == parent);
  }
  if (tracing::validTracestate(state)) {
    FUZZ_CHECK(state.size() <= 512);
    FUZZ_CHECK(state.find_first_of("\r\n") == std::string_view::npos);  // safe to forward as a header
  }

  config::AccessLogFormat format;
  format.body_names = {"user", "seed", "n"};
  format.body_keys = {"user", "seed", "n"};
  std::vector<std::string> values;
  config::readBodyFields(format, in, values);
  FUZZ_CHECK(values.size() == 3);
  for (const auto& v : values) FUZZ_CHECK(v.size() <= 256);
  return 0;
}
