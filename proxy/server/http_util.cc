#include "proxy/server/http_util.h"


namespace infermesh::proxy {

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
