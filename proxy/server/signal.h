#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace infermesh::proxy {

// A one-shot wake-up between two coroutines on the same worker thread:
// notify() before or during wait() both work. Reusable after wait returns.
class Signal {
 public:
  explicit Signal(const boost::asio::any_io_executor& ex) : timer_(ex) {}
  boost::asio::awaitable<void> wait() {
    if (!fired_) {
      timer_.expires_at(boost::asio::steady_timer::time_point::max());
      co_await timer_.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
    }
    fired_ = false;
  }
  void notify() {
    fired_ = true;
    timer_.cancel();
  }

 private:
  boost::asio::steady_timer timer_;
  bool fired_ = false;
};

}  // namespace infermesh::proxy
