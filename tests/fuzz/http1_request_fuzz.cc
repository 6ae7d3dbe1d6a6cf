// HTTP/1.1 requests from clients, through the steps Http1Connection takes
// (proxy/server/http1_connection.cc), on an in-memory stream instead of a
// socket: the raw head read to the blank line within the header limit and
// checked (obs-fold, field count), Beast's request parser with the same
// limits and chunk-extension bound, the framing checks, then the body into
// a fixed buffer, request after request while the connection stays
// keep-alive. Input: one byte of settings (read size, small or default
// limits), then the bytes the client sends.

#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

#include <array>
#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "proxy/config/snapshot.h"
#include "proxy/server/http1_head.h"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using namespace infermesh;

namespace {

// Hands out the client's bytes `step` at a time, as reads from a socket
// would, then end of stream.
class ClientBytes {
 public:
  ClientBytes(std::string_view bytes, std::size_t step) : bytes_(bytes), step_(step) {}

  template <typename Buffers>
  std::size_t read_some(const Buffers& buffers, boost::system::error_code& ec) {
    if (bytes_.empty()) {
      ec = asio::error::eof;
      return 0;
    }
    ec = {};
    const std::size_t n = asio::buffer_copy(buffers, asio::buffer(bytes_.data(), std::min(step_, bytes_.size())));
    bytes_.remove_prefix(n);
    return n;
  }
  template <typename Buffers>
  std::size_t read_some(const Buffers& buffers) {
    boost::system::error_code ec;
    const std::size_t n = read_some(buffers, ec);
    if (ec) throw boost::system::system_error(ec);
    return n;
  }

 private:
  std::string_view bytes_;
  std::size_t step_;
};

constexpr std::size_t kReadSlack = 64 * 1024;  // as in http1_connection.cc

// Http1Connection::readHead with reads from `in`: true when `buffer` holds
// a whole head within the limit.
bool readHead(ClientBytes& in, beast::flat_buffer& buffer, std::size_t limit, std::size_t& head_size) {
  std::size_t searched = 0;
  for (;;) {
    const std::string_view data(static_cast<const char*>(buffer.data().data()), buffer.size());
    const proxy::HeadScan scan = proxy::scanHead(data, limit, searched, head_size);
    if (scan != proxy::HeadScan::NeedMore) return scan == proxy::HeadScan::Complete;
    const std::size_t room = buffer.max_size() - buffer.size();
    boost::system::error_code ec;
    const std::size_t n = in.read_some(buffer.prepare(std::min<std::size_t>(room, 16 * 1024)), ec);
    buffer.commit(n);
    if (ec) return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  config::ListenerLimits limits;
  if (data[0] & 0x80) {  // small limits, so their edges are reached
    limits.max_request_header_bytes = 256;
    limits.max_request_body_bytes = 64;
    limits.max_request_headers = 4;
  }
  ClientBytes in(std::string_view(reinterpret_cast<const char*>(data + 1), size - 1), 1 + (data[0] & 0x7f));
  beast::flat_buffer buffer;
  std::array<char, 16 * 1024> body_buf;

  for (int request = 0; request < 16; ++request) {
    buffer.max_size(std::max<std::size_t>(buffer.size(), limits.max_request_header_bytes + kReadSlack));
    std::size_t chunk_extension_bytes = 0;
    auto on_chunk_header = [&](std::uint64_t, std::string_view extensions, boost::system::error_code& cec) {
      chunk_extension_bytes += extensions.size();
      if (chunk_extension_bytes > proxy::kMaxChunkExtensionBytes) cec = http::error::bad_chunk_extension;
    };
    http::request_parser<http::buffer_body> parser;
    parser.header_limit(limits.max_request_header_bytes);
    parser.body_limit(limits.max_request_body_bytes);
    parser.on_chunk_header(on_chunk_header);

    std::size_t head_size = 0;
    if (!readHead(in, buffer, limits.max_request_header_bytes, head_size)) return 0;  // 431, 400 or closed
    const auto shape = proxy::inspectHead(std::string_view(static_cast<const char*>(buffer.data().data()), head_size));
    if (shape.folded || shape.fields > limits.max_request_headers) return 0;  // 400 / 431
    boost::system::error_code ec;
    http::read_header(in, buffer, parser, ec);
    if (ec) return 0;  // 400 / 431 / 413
    FUZZ_CHECK(parser.is_header_done());
    auto& req = parser.get();
    if (proxy::requestFramingError(req) != nullptr) return 0;  // 400
    // What the filter chain is given.
    FUZZ_CHECK(!req.method_string().empty() && !req.target().empty());
    for (const auto& f : req) FUZZ_CHECK(!f.name_string().empty());

    std::uint64_t body_bytes = 0;
    while (!parser.is_done()) {
      req.body().data = body_buf.data();
      req.body().size = body_buf.size();
      http::read(in, buffer, parser, ec);
      if (ec == http::error::need_buffer) ec = {};
      if (ec) return 0;  // 400 / 413 / client gone
      body_bytes += body_buf.size() - req.body().size;
      FUZZ_CHECK(body_bytes <= limits.max_request_body_bytes);
    }
    if (const auto length = parser.content_length()) FUZZ_CHECK(body_bytes == *length || parser.chunked());
    if (!req.keep_alive()) return 0;
  }
  return 0;
}
