#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "proxy/server/signal.h"
#include "proxy/tls/transport.h"

struct nghttp2_session;

namespace infermesh::proxy {

class UpstreamH2Session;
using HeaderPairs = std::vector<std::pair<std::string, std::string>>;

// One request/response exchange on an upstream HTTP/2 connection. Filled by
// the session's callbacks; the router waits on `changed`.
struct UpstreamH2Stream {
  explicit UpstreamH2Stream(const boost::asio::any_io_executor& ex) : changed(ex) {}
  std::int32_t id = 0;
  // Request body, sent as the peer's windows allow.
  std::string body;
  std::size_t body_sent = 0;
  // Response.
  unsigned status = 0;
  HeaderPairs headers;
  HeaderPairs trailers;
  bool headers_done = false;
  std::string data;  // received, not yet taken by read()
  bool ended = false;  // END_STREAM seen
  bool reset = false;  // RST_STREAM or the connection went
  std::uint32_t error_code = 0;  // of the reset (REFUSED_STREAM: never processed)
  Signal changed;
  std::weak_ptr<UpstreamH2Session> session;

  // Stop the exchange (client gone, deadline): RST_STREAM(CANCEL).
  void cancel();
};

// A multiplexed HTTP/2 (h2c) connection to one endpoint, owned by a worker's
// pool and shared by many streams. Opens no more streams than the peer's
// SETTINGS_MAX_CONCURRENT_STREAMS; a GOAWAY or error retires it.
class UpstreamH2Session : public std::enable_shared_from_this<UpstreamH2Session> {
 public:
  // Takes over a connected (and, with TLS, handshaken) stream.
  explicit UpstreamH2Session(UpstreamStream stream);
  ~UpstreamH2Session();

  // Starts the read and write loops (sends the connection preface).
  void start();
  // Waits for the server's SETTINGS (its stream limit) up to `limit`; no
  // stream is opened before, so a burst cannot overrun the limit.
  boost::asio::awaitable<bool> waitReady(std::chrono::steady_clock::duration limit);
  // Whether another stream may be opened now.
  bool acceptsStreams() const;
  bool alive() const { return open_ && !goaway_; }
  // Submits a request (pseudo-headers first); nullptr when it cannot.
  std::shared_ptr<UpstreamH2Stream> open(const HeaderPairs& headers, std::string body);
  // Tells nghttp2 the caller took `n` bytes of a stream's data (flow control).
  void consumed(std::int32_t id, std::size_t n);
  void cancel(std::int32_t id);
  void close();

  struct Callbacks;

 private:
  boost::asio::awaitable<void> readLoop();
  boost::asio::awaitable<void> writeLoop();
  void fail();

  UpstreamStream stream_;
  nghttp2_session* session_ = nullptr;
  Signal want_write_;
  std::unordered_map<std::int32_t, std::shared_ptr<UpstreamH2Stream>> streams_;
  std::uint32_t peer_max_streams_ = 100;
  bool ready_ = false;  // the server's SETTINGS arrived
  Signal ready_signal_;
  bool open_ = false;
  bool goaway_ = false;
};

// A worker's HTTP/2 upstream sessions by endpoint key.
class UpstreamH2Pool {
 public:
  // A live session with room for a stream, or nullptr.
  std::shared_ptr<UpstreamH2Session> find(std::uint64_t key);
  void add(std::uint64_t key, std::shared_ptr<UpstreamH2Session> s) { sessions_[key].push_back(std::move(s)); }
  void clear();

 private:
  std::unordered_map<std::uint64_t, std::vector<std::shared_ptr<UpstreamH2Session>>> sessions_;
};

}  // namespace infermesh::proxy
