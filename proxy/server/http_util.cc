#include "proxy/server/http_util.h"

#include <cstdio>

namespace infermesh::proxy {

void appendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
}

std::string openAiErrorJson(const filter::LocalReply& reply) {
  std::string out = "{\"error\":{\"message\":";
  appendJsonString(out, reply.message);
  out += ",\"type\":";
  appendJsonString(out, reply.type);
  out += ",\"code\":";
  appendJsonString(out, reply.code);
  out += "}}";
  return out;
}

bool isHopByHop(std::string_view name) {
  static constexpr std::string_view kHop[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                              "te", "trailer", "upgrade", "proxy-authenticate", "proxy-authorization"};
  for (auto h : kHop)
    if (filter::equalsIgnoreCase(name, h)) return true;
  return false;
}

bool validRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id)
    if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\') return false;
  return true;
}

}  // namespace infermesh::proxy
