#include "proxy/tracing/trace_context.h"

#include <random>

namespace infermesh::tracing {
namespace {

// Lowercase hex only: the spec refuses uppercase.
int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

template <std::size_t N>
bool parseHex(std::string_view s, std::array<std::uint8_t, N>& out) {
  if (s.size() != 2 * N) return false;
  for (std::size_t i = 0; i < N; ++i) {
    const int hi = hexValue(s[2 * i]);
    const int lo = hexValue(s[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return true;
}

std::mt19937_64& rng() {
  thread_local std::mt19937_64 engine{std::random_device{}()};
  return engine;
}

template <std::size_t N>
std::array<std::uint8_t, N> randomId() {
  std::array<std::uint8_t, N> id{};
  do {
    for (std::size_t i = 0; i < N; i += 8) {
      std::uint64_t v = rng()();
      for (std::size_t j = 0; j < 8 && i + j < N; ++j, v >>= 8) id[i + j] = static_cast<std::uint8_t>(v);
    }
  } while (isZero(id));
  return id;
}

}  // namespace

std::optional<TraceParent> parseTraceparent(std::string_view v) {
  // version "-" trace-id "-" parent-id "-" flags
  if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return std::nullopt;
  std::array<std::uint8_t, 1> version{};
  if (!parseHex(v.substr(0, 2), version) || version[0] == 0xFF) return std::nullopt;
  // Version 00 is exactly 55 characters; a later version may append
  // fields after another dash, which this reader ignores.
  if (version[0] == 0 ? v.size() != 55 : v.size() > 55 && v[55] != '-') return std::nullopt;
  TraceParent p;
  std::array<std::uint8_t, 1> flags{};
  if (!parseHex(v.substr(3, 32), p.trace_id) || !parseHex(v.substr(36, 16), p.parent_id) ||
      !parseHex(v.substr(53, 2), flags))
    return std::nullopt;
  if (isZero(p.trace_id) || isZero(p.parent_id)) return std::nullopt;
  p.flags = flags[0];
  return p;
}

std::string formatTraceparent(const TraceId& trace, const SpanId& span, std::uint8_t flags) {
  std::string s;
  s.reserve(55);
  s += "00-";
  s += toHex(trace);
  s += '-';
  s += toHex(span);
  s += '-';
  s += toHex(std::array<std::uint8_t, 1>{flags});
  return s;
}

bool validTracestate(std::string_view v) {
  if (v.size() > 512) return false;
  int members = 1;
  for (char c : v) {
    if (c == ',') ++members;
    if (c < 0x20 || c > 0x7E) return false;
  }
  return members <= 32;
}

TraceId newTraceId() { return randomId<16>(); }
SpanId newSpanId() { return randomId<8>(); }

}  // namespace infermesh::tracing
