#include "filters/router/grpc_message.h"

#include <cstdint>

namespace infermesh::router {
namespace {

// Protobuf wire format, just enough to find and replace field 1. Hand
// written: only the top-level tags are walked, nothing is decoded beyond
// that, and no generated code for the (large, versioned) messages is needed.
bool varint(std::string_view& in, std::uint64_t& v) {
  v = 0;
  for (int shift = 0; shift < 64 && !in.empty(); shift += 7) {
    const auto b = static_cast<std::uint8_t>(in.front());
    in.remove_prefix(1);
    v |= std::uint64_t{b & 0x7fu} << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

void putVarint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}

// The first message of a gRPC body: 1 byte compressed flag, 4 bytes length.
bool firstMessage(std::string_view body, std::string_view& message) {
  if (body.size() < 5 || body[0] != 0) return false;
  const std::uint32_t len = (std::uint32_t(std::uint8_t(body[1])) << 24) | (std::uint32_t(std::uint8_t(body[2])) << 16) |
                            (std::uint32_t(std::uint8_t(body[3])) << 8) | std::uint8_t(body[4]);
  if (body.size() - 5 < len) return false;
  message = body.substr(5, len);
  return true;
}

// Walks the top-level fields; calls f(field number, wire type, whole field
// bytes, payload for length-delimited fields). False on malformed input.
template <typename F>
bool walk(std::string_view msg, F&& f) {
  while (!msg.empty()) {
    const char* start = msg.data();
    std::uint64_t tag = 0;
    if (!varint(msg, tag)) return false;
    const auto field = tag >> 3;
    const auto type = tag & 7;
    std::string_view payload;
    std::uint64_t v = 0;
    switch (type) {
      case 0:
        if (!varint(msg, v)) return false;
        break;
      case 1:
        if (msg.size() < 8) return false;
        msg.remove_prefix(8);
        break;
      case 2:
        if (!varint(msg, v) || v > msg.size()) return false;
        payload = msg.substr(0, v);
        msg.remove_prefix(v);
        break;
      case 5:
        if (msg.size() < 4) return false;
        msg.remove_prefix(4);
        break;
      default:
        return false;  // groups are not used by these messages
    }
    f(field, type, std::string_view(start, static_cast<std::size_t>(msg.data() - start)), payload);
  }
  return true;
}

}  // namespace

bool oipModelName(std::string_view body, std::string& model, bool& repeated) {
  repeated = false;
  std::string_view msg;
  if (!firstMessage(body, msg)) return false;
  bool found = false;
  const bool ok = walk(msg, [&](std::uint64_t field, std::uint64_t type, std::string_view, std::string_view payload) {
    if (field != 1) return;
    if (found || type != 2) {
      repeated = true;  // a second model_name, or one of another wire type
      return;
    }
    model.assign(payload);
    found = true;
  });
  return ok && found;
}

bool rewriteOipModelName(std::string& body, std::string_view model) {
  std::string_view msg;
  if (!firstMessage(body, msg) || msg.size() + 5 != body.size()) return false;
  std::string out;
  out.reserve(body.size() + model.size());
  out.append(5, '\0');
  out += static_cast<char>(0x0a);  // field 1, length-delimited
  putVarint(out, model.size());
  out += model;
  const bool ok = walk(msg, [&](std::uint64_t field, std::uint64_t, std::string_view whole, std::string_view) {
    if (field != 1) out += whole;
  });
  if (!ok) return false;
  const auto len = static_cast<std::uint32_t>(out.size() - 5);
  out[1] = static_cast<char>(len >> 24);
  out[2] = static_cast<char>(len >> 16);
  out[3] = static_cast<char>(len >> 8);
  out[4] = static_cast<char>(len);
  body = std::move(out);
  return true;
}

std::optional<std::chrono::milliseconds> parseGrpcTimeout(std::string_view value) {
  if (value.size() < 2 || value.size() > 9) return std::nullopt;  // at most 8 digits
  std::uint64_t n = 0;
  for (char c : value.substr(0, value.size() - 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + static_cast<std::uint64_t>(c - '0');
  }
  using namespace std::chrono;
  switch (value.back()) {
    case 'H': return duration_cast<milliseconds>(hours(n));
    case 'M': return duration_cast<milliseconds>(minutes(n));
    case 'S': return duration_cast<milliseconds>(seconds(n));
    case 'm': return milliseconds(n);
    case 'u': return duration_cast<milliseconds>(microseconds(n + 999));
    case 'n': return duration_cast<milliseconds>(nanoseconds(n + 999999));
    default: return std::nullopt;
  }
}

}  // namespace infermesh::router
