#include "proxy/config/access_log.h"

#include <simdjson.h>

namespace infermesh::config {

void readBodyFields(const AccessLogFormat& format, std::string_view body, std::vector<std::string>& out) {
  out.assign(format.body_keys.size(), std::string());
  if (body.empty()) return;  // (a null view's data must not reach the parser's copy)
  // One parser per thread: its buffers are kept, so a request allocates none.
  thread_local simdjson::dom::parser parser;
  simdjson::dom::object obj;
  if (parser.parse(body.data(), body.size()).get_object().get(obj)) return;
  constexpr std::size_t kMax = 256;
  for (std::size_t i = 0; i < format.body_keys.size(); ++i) {
    simdjson::dom::element v;
    if (obj[format.body_keys[i]].get(v)) continue;
    std::string_view text;
    if (!v.get_string().get(text)) out[i] = std::string(text.substr(0, kMax));
    else if (v.is_number() || v.is_bool()) out[i] = simdjson::minify(v).substr(0, kMax);
  }
}

}  // namespace infermesh::config
