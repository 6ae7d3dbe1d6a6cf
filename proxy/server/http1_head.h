#pragma once

#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/message.hpp>

#include <cstddef>
#include <string_view>

namespace infermesh::proxy {

// The HTTP/1.1 request checks that need no socket, shared by
// Http1Connection and the fuzz target that drives Beast's parser the same
// way (tests/fuzz/http1_request_fuzz.cc).

// Chunk extensions carry nothing the proxy uses, yet each costs parsing;
// the bound is per request so many small ones cannot add up either.
inline constexpr std::size_t kMaxChunkExtensionBytes = 1024;

enum class HeadScan { NeedMore, Complete, TooLarge };

// One step of reading a request head: whether `data` (what the connection
// has buffered) holds a whole head of at most `limit` bytes. On Complete,
// `head_size` is its length through the blank line; on NeedMore, read more
// and call again with the same `searched` (where the next search starts).
HeadScan scanHead(std::string_view data, std::size_t limit, std::size_t& searched, std::size_t& head_size);

struct HeadShape {
  bool folded = false;     // a line starting with SP or HTAB (obs-fold)
  std::size_t fields = 0;  // header lines after the request line
};

// The raw head, checked before Beast parses it: Beast joins obs-fold lines
// into the previous value without a word, and bounds a head's bytes but
// not its number of fields. `head` runs through the blank line that ends
// it (CRLF CRLF).
HeadShape inspectHead(std::string_view head);

// Why a parsed head must be refused with a 400, or nullptr: both framings,
// or a Transfer-Encoding other than plain chunked (request smuggling), and
// a Host header missing (HTTP/1.1) or repeated.
const char* requestFramingError(const boost::beast::http::request_header<>& req);

}  // namespace infermesh::proxy
