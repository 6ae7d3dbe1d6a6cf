#pragma once

// What a listener's access-log lines hold (docs/operations.md#access-log):
// the built-in fields chosen and their order, and extra fields from a
// request header or the JSON request body.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace infermesh::config {

enum class LogField : std::uint8_t {
  RequestId, Client, Method, Path, Status, Model, ServedModel, Route, Routing, Fallbacks, Upstream, Region,
  Attempts, Stream, Protocol, Identity, BytesIn, BytesOut, DurationMs, FirstByteMs, TtftMs, Tenant, Principal,
  InputTokens, OutputTokens, CachedTokens, Cost, Error, Count
};

// Names as written, by LogField.
inline constexpr std::array<std::string_view, static_cast<std::size_t>(LogField::Count)> kLogFieldNames = {
    "request_id", "client",    "method",       "path",          "status",        "model",        "served_model",
    "route",      "routing",   "fallbacks",    "upstream",      "region",        "attempts",     "stream",
    "protocol",   "identity",  "bytes_in",     "bytes_out",     "duration_ms",   "first_byte_ms", "ttft_ms",
    "tenant",     "principal", "input_tokens", "output_tokens", "cached_tokens", "cost",          "error"};

struct AccessLogFormat {
  std::vector<LogField> fields;  // every built-in field unless the listener chose
  struct Extra {
    std::string name;
    std::string header;  // lower-case; or empty
  };
  std::vector<Extra> extra;             // header fields, then body fields, in config order each
  std::vector<std::string> body_names;  // log names of the body fields
  std::vector<std::string> body_keys;   // the body fields they read
};

// The values of `format`'s body fields in a JSON request body (strings as
// they are, numbers and booleans as written; empty when absent), 256 bytes
// each at most.
void readBodyFields(const AccessLogFormat& format, std::string_view body, std::vector<std::string>& out);

}  // namespace infermesh::config
