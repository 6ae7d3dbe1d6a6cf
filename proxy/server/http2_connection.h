#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "proxy/tls/transport.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "proxy/server/connection.h"
#include "proxy/server/signal.h"
#include "proxy/stats/worker_stats.h"

struct nghttp2_session;

namespace infermesh::proxy {

class Worker;
struct Http2Stream;

// The HTTP/2 connection manager (nghttp2 for framing, HPACK and flow
// control): every request stream runs through the listener's filter chain
// exactly as an HTTP/1.1 request does, concurrently with the others.
// Memory per stream is bounded on both sides: request bodies by the
// listener's body limit, responses by a small send buffer that makes the
// terminal filter wait (and so stop reading upstream) while the client's
// flow-control window is closed.
class Http2Connection final : public DownstreamConnection {
 public:
  Http2Connection(Worker& worker, Transport transport, std::uint32_t listener_index);
  ~Http2Connection() override;

  static boost::asio::awaitable<void> serve(std::unique_ptr<Http2Connection> self);

  // GOAWAY naming the last stream taken; streams in flight finish.
  void drain() override;
  void close() override;
  void setPeerIdentity(std::string id) { peer_identity_ = std::move(id); }

  // For Http2Stream and the nghttp2 callbacks.
  Worker& worker() { return worker_; }
  nghttp2_session* session() { return session_; }
  std::uint32_t listenerIndex() const { return listener_index_; }
  const std::string& peerIp() const { return peer_ip_; }
  void wantWrite() { want_write_.notify(); }
  void streamFinished(Http2Stream& s);  // its coroutine is done

  struct Callbacks;  // nghttp2 callbacks (http2_connection.cc)

 private:
  boost::asio::awaitable<void> readLoop();
  boost::asio::awaitable<void> writeLoop();
  // Frames that cost the client nothing and us something are counted per
  // second; too many get the connection a GOAWAY (ENHANCE_YOUR_CALM).
  void countFrame(std::uint8_t type, std::uint8_t flags, std::size_t length);
  void enhanceYourCalm(stats::Http2Protection why);
  void maybeRelease(std::int32_t id);

  Worker& worker_;
  Transport socket_;
  std::uint32_t listener_index_;
  std::string peer_ip_;
  std::string peer_identity_;  // the client certificate's SPIFFE ID (mTLS)
  nghttp2_session* session_ = nullptr;
  Signal want_write_;
  Signal all_streams_done_;
  std::map<std::int32_t, std::unique_ptr<Http2Stream>> streams_;
  std::size_t running_streams_ = 0;  // stream coroutines not yet finished
  bool open_ = true;
  bool draining_ = false;
  bool calmed_ = false;
  // Flood accounting, per one-second window.
  std::chrono::steady_clock::time_point window_start_{};
  std::uint32_t resets_in_window_ = 0;
  std::uint32_t pings_in_window_ = 0;
  std::uint32_t settings_in_window_ = 0;
  std::uint32_t empty_data_in_window_ = 0;
};

}  // namespace infermesh::proxy
