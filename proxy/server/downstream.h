#pragma once

#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <optional>
#include <string_view>

#include "proxy/filter/stream_context.h"

namespace infermesh::proxy {

// The response side of one downstream stream, as the terminal filter sees
// it. Implemented by the stream driver. Writes run the response filters,
// then go to the client through the codec; a write completes when the client took the
// bytes, which is what paces the upstream reads (backpressure).
class DownstreamStream {
 public:
  virtual ~DownstreamStream() = default;
  // `content_length`: the body size when known; otherwise the body is
  // framed by the codec (chunked for HTTP/1.1). Returns false when the
  // client is gone.
  virtual boost::asio::awaitable<bool> sendHeaders(filter::ResponseHead& head, bool end_stream,
                                                   std::optional<std::uint64_t> content_length) = 0;
  virtual boost::asio::awaitable<bool> sendBody(std::string_view chunk, bool end_stream) = 0;
  // Ends the response with trailers (gRPC status). Codecs that cannot carry
  // them (HTTP/1.1 with a content length) just end the body.
  virtual boost::asio::awaitable<bool> sendTrailers(filter::HeaderList& trailers) = 0;
  // Answers with ctx.local_reply (the OpenAI-shaped error, or the reply's
  // own body or chunks); when a response has already started, aborts it
  // instead.
  virtual boost::asio::awaitable<void> sendLocalReply() = 0;
  virtual bool responseStarted() const = 0;
  // The response failed after it started: the client must see an error,
  // never a clean end.
  virtual void abort() = 0;
  // The terminal filter is done with the stream (always called once).
  virtual void finish() = 0;
};

}  // namespace infermesh::proxy
