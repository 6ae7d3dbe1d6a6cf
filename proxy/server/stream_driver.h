#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/filter/filter_manager.h"
#include "proxy/server/downstream.h"
#include "proxy/server/signal.h"

namespace infermesh::proxy {

class Worker;

// A codec's side of one stream (HTTP/1.1 request, HTTP/2 stream): where the
// request body comes from and where the response goes. No filters here;
// the stream driver runs them.
class CodecStream {
 public:
  enum class Read {
    More,    // `out` holds body bytes and more follow
    Last,    // `out` holds the last body bytes (possibly none)
    Failed,  // the codec set ctx.local_reply (answer it) or ctx.error_reason (the client left)
  };
  virtual ~CodecStream() = default;
  // Whether a body follows the request head.
  virtual bool bodyFollows() const = 0;
  // Whether the client waits for a go-ahead before it sends the body
  // (HTTP/1.1 Expect: 100-continue); beforeBody() then sends it.
  virtual bool continueExpected() const { return false; }
  virtual boost::asio::awaitable<void> beforeBody() { co_return; }
  // `out` views codec-owned bytes, valid until the next read.
  virtual boost::asio::awaitable<Read> readBody(std::string_view& out) = 0;

  virtual boost::asio::awaitable<bool> writeHead(filter::ResponseHead& head, bool end_stream,
                                                 std::optional<std::uint64_t> content_length) = 0;
  virtual boost::asio::awaitable<bool> writeBody(std::string_view bytes, bool end_stream) = 0;
  virtual boost::asio::awaitable<bool> writeTrailers(const filter::HeaderList& trailers) = 0;
  // Ends the response as failed: a reset, or a close short of its framing.
  virtual void abortResponse() = 0;
  // Waits until `done` fires while watching the client; may return early.
  // True when the client left first (the driver then cancels the stream's
  // work); either way the driver goes on waiting for `done`.
  virtual boost::asio::awaitable<bool> waitWatchingClient(Signal& done) = 0;
};

// The life of one stream, the same for every codec (DESIGN.md section 4,
// steps 3-7): the request guard, request events through the filter chain,
// the terminal filter's response back through the chain in reverse, then
// the completion and log hooks, stats and the access log. The terminal
// filter sees it as the stream's DownstreamStream.
class StreamDriver final : public DownstreamStream, private filter::StreamServices {
 public:
  StreamDriver(Worker& worker, filter::StreamContext& ctx, CodecStream& codec, std::uint32_t listener_index);
  ~StreamDriver() override;
  StreamDriver(const StreamDriver&) = delete;
  StreamDriver& operator=(const StreamDriver&) = delete;

  boost::asio::awaitable<void> run();
  // The codec lost the client (connection closed, stream reset): the
  // stream's work is cancelled and held events are released.
  void clientGone() { cancel(); }

  // DownstreamStream
  boost::asio::awaitable<bool> sendHeaders(filter::ResponseHead& head, bool end_stream,
                                           std::optional<std::uint64_t> content_length) override;
  boost::asio::awaitable<bool> sendBody(std::string_view chunk, bool end_stream) override;
  boost::asio::awaitable<bool> sendTrailers(filter::HeaderList& trailers) override;
  boost::asio::awaitable<void> sendLocalReply() override;
  bool responseStarted() const override { return response_started_; }
  void abort() override;
  void finish() override { done_.notify(); }

 private:
  using Progress = filter::FilterManager::Progress;
  // The request side: with a target resolver (every chain that ends in the
  // router), the whole body is read and resolved before the first filter;
  // without, headers and body chunks go through the chain as they arrive.
  boost::asio::awaitable<Progress> resolveThenFilter();
  boost::asio::awaitable<Progress> streamThroughFilters();
  // Waits out a stopped event; returns its final progress.
  boost::asio::awaitable<Progress> settle(Progress p);
  // A response filter answered instead: written past the response filters.
  boost::asio::awaitable<void> replyFromResponseSide();
  boost::asio::awaitable<bool> writeOut(std::string_view bytes, bool end_stream);
  static boost::asio::awaitable<bool> nothingToWrite();
  // Where a filter held, edited or answered: the slow paths of the above.
  boost::asio::awaitable<bool> sendHeadersSlow(filter::ResponseHead& head, bool end_stream, Progress p);
  boost::asio::awaitable<bool> sendBodySlow(filter::BodyChunk chunk, bool end_stream, Progress p);
  // The stream's work stops: cancel hooks run, held events are released.
  void cancel();

  // filter::StreamServices
  std::uint64_t startTimer(std::chrono::milliseconds delay, std::function<void()> fn) override;
  void cancelTimer(std::uint64_t id) override;
  void resetStream() override;
  std::function<void(std::function<void()>)> dispatcher() override;
  // A response filter ended the response with this chunk (endResponse()).
  boost::asio::awaitable<bool> endEarly(std::string_view bytes);

  Worker& worker_;
  filter::StreamContext& ctx_;
  CodecStream& codec_;
  std::uint32_t listener_index_;
  filter::FilterManager filters_;
  Signal done_;
  Signal resumed_;
  Progress resumed_progress_{};
  bool response_started_ = false;
  bool bypass_response_filters_ = false;
  bool aborted_ = false;
  bool cancelled_ = false;
  bool ended_early_ = false;  // a filter ended the response; the rest is dropped
  bool early_written_ = false;
  std::string early_tail_;  // the last chunk, when a filter rewrote it
  std::vector<std::pair<std::uint64_t, std::shared_ptr<boost::asio::steady_timer>>> timers_;
  std::uint64_t last_timer_ = 0;
  std::shared_ptr<bool> alive_;  // made with the first timer; false once the driver is gone
};

}  // namespace infermesh::proxy
