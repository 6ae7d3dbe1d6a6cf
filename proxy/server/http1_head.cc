#include "proxy/server/http1_head.h"

#include "proxy/filter/stream_context.h"

namespace infermesh::proxy {

namespace http = boost::beast::http;

HeadShape inspectHead(std::string_view head) {
  HeadShape shape;
  std::size_t pos = head.find("\r\n");
  if (pos == std::string_view::npos) return shape;
  pos += 2;
  while (pos + 2 < head.size()) {
    if (head[pos] == ' ' || head[pos] == '\t') shape.folded = true;
    else ++shape.fields;
    pos = head.find("\r\n", pos) + 2;  // found: the head ends in CRLF CRLF
  }
  return shape;
}

const char* requestFramingError(const http::request_header<>& req) {
  // Request smuggling defences beyond the parser's own checks.
  if (req.count(http::field::transfer_encoding) &&
      (req.count(http::field::content_length) ||
       !filter::equalsIgnoreCase(req[http::field::transfer_encoding], "chunked")))
    return "ambiguous request framing (Transfer-Encoding)";
  // Routing and virtual hosts read Host: HTTP/1.1 must send exactly one
  // (RFC 9112 section 3.2); HTTP/1.0 may omit it, but never send two.
  const auto hosts = req.count(http::field::host);
  if (hosts > 1) return "more than one Host header";
  if (hosts == 0 && req.version() >= 11) return "missing Host header";
  return nullptr;
}

}  // namespace infermesh::proxy
