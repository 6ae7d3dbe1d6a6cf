#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <optional>

namespace infermesh::proxy {

// A wake-up between two coroutines on the same worker thread: notify()
// before or during wait() both work. wait() does not consume the
// notification (a wait cancelled by an awaitable operator must not swallow
// it); the owner calls reset() before the signal's next use.
class Signal {
 public:
  explicit Signal(const boost::asio::any_io_executor& ex) : executor_(ex) {}
  // Returns when notified, or early if the wait itself is cancelled.
  boost::asio::awaitable<void> wait() {
    if (!fired_) {
      // Made on first wait: most signals are notified before anyone waits,
      // or never waited on, and a timer costs a service lookup to make.
      if (!timer_) timer_.emplace(executor_);
      timer_->expires_at(boost::asio::steady_timer::time_point::max());
      co_await timer_->async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
  }
  bool notified() const { return fired_; }
  void reset() { fired_ = false; }
  void notify() {
    fired_ = true;
    if (timer_) timer_->cancel();
  }

 private:
  boost::asio::any_io_executor executor_;
  std::optional<boost::asio::steady_timer> timer_;
  bool fired_ = false;
};

}  // namespace infermesh::proxy
