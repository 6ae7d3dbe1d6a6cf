#include "proxy/server/http1_head.h"

#include "proxy/filter/stream_context.h"

namespace infermesh::proxy {

namespace http = boost::beast::http;

HeadScan scanHead(std::string_view data, std::size_t limit, std::size_t& searched, std::size_t& head_size) {
  const auto end = data.find("\r\n\r\n", searched);
  if (end != std::string_view::npos) {
    head_size = end + 4;
    return head_size > limit ? HeadScan::TooLarge : HeadScan::Complete;
  }
  if (data.size() >= limit) return HeadScan::TooLarge;
  searched = data.size() < 3 ? 0 : data.size() - 3;
  return HeadScan::NeedMore;
}

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
