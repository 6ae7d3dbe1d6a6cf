#pragma once

// W3C Trace Context (https://www.w3.org/TR/trace-context/): the
// `traceparent` header parsed and written, `tracestate` checked, and ids
// made. No allocation on the request path beyond the header it writes.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace infermesh::tracing {

using TraceId = std::array<std::uint8_t, 16>;
using SpanId = std::array<std::uint8_t, 8>;

constexpr std::uint8_t kSampledFlag = 0x01;

struct TraceParent {
  TraceId trace_id{};
  SpanId parent_id{};
  std::uint8_t flags = 0;
  bool sampled() const { return (flags & kSampledFlag) != 0; }
};

// A `traceparent` value, or nullopt when it is not one the spec accepts
// (then the proxy starts a new trace, as the spec says a receiver should).
// Versions above 00 are read by their version-00 prefix; `ff` is refused.
std::optional<TraceParent> parseTraceparent(std::string_view value);

// "00-<trace id>-<span id>-<flags>": 55 characters.
std::string formatTraceparent(const TraceId& trace, const SpanId& span, std::uint8_t flags);

// Whether a `tracestate` value may be passed on: at most 512 characters
// and 32 list members of printable ASCII. A bad one is dropped, not fixed.
bool validTracestate(std::string_view value);

// Random, never all zero (which the spec reserves for "invalid").
TraceId newTraceId();
SpanId newSpanId();

template <std::size_t N>
bool isZero(const std::array<std::uint8_t, N>& id) {
  for (auto b : id)
    if (b != 0) return false;
  return true;
}

// Lowercase hex of an id, for logs and tests.
template <std::size_t N>
std::string toHex(const std::array<std::uint8_t, N>& id) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s(2 * N, '0');
  for (std::size_t i = 0; i < N; ++i) {
    s[2 * i] = kHex[id[i] >> 4];
    s[2 * i + 1] = kHex[id[i] & 0xF];
  }
  return s;
}

}  // namespace infermesh::tracing
