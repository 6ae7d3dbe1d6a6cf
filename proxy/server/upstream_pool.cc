#include "proxy/server/upstream_pool.h"

#include <sys/socket.h>

#include <algorithm>
#include <charconv>

#include "proxy/filter/stream_context.h"

namespace infermesh::proxy {
namespace {

using Clock = std::chrono::steady_clock;

// Expired connections are closed together at most this often, so a busy
// pool does not wake once per connection.
constexpr std::chrono::milliseconds kSweepCoalesce{100};

// The peer has not closed and sent nothing unsolicited.
bool stillUsable(UpstreamConnection& c) {
  if (c.buffer.size() != 0) return false;
  char byte;
  ssize_t n = ::recv(c.stream.lower().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

std::chrono::milliseconds keepAliveFor(std::chrono::milliseconds configured, std::string_view header) {
  // "timeout=5, max=100" (RFC 2068 19.7.1.1); only timeout matters here.
  while (!header.empty()) {
    const auto comma = header.find(',');
    std::string_view param = header.substr(0, comma);
    while (!param.empty() && (param.front() == ' ' || param.front() == '\t')) param.remove_prefix(1);
    if (filter::equalsIgnoreCase(param.substr(0, 8), "timeout=")) {
      param.remove_prefix(8);
      unsigned seconds = 0;
      if (std::from_chars(param.data(), param.data() + param.size(), seconds).ec == std::errc()) {
        const std::chrono::milliseconds server{std::chrono::seconds(seconds)};
        const auto margin = std::min<std::chrono::milliseconds>(std::chrono::seconds(1), server / 2);
        return std::min(configured, server - margin);
      }
    }
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return configured;
}

std::unique_ptr<UpstreamConnection> UpstreamPool::take(std::uint64_t key) {
  auto it = idle_.find(key);
  if (it == idle_.end()) return nullptr;
  auto& list = it->second;
  const auto now = Clock::now();
  while (!list.empty()) {
    auto conn = std::move(list.back());
    list.pop_back();
    if (now < conn->expires_at && stillUsable(*conn)) return conn;
  }
  return nullptr;
}

void UpstreamPool::put(std::uint64_t key, std::unique_ptr<UpstreamConnection> conn,
                       std::chrono::milliseconds keep_for) {
  if (keep_for.count() <= 0) return;  // dropping closes it
  auto& list = idle_[key];
  if (list.size() >= kMaxIdlePerEndpoint) return;
  conn->expires_at = Clock::now() + keep_for;
  const auto at = conn->expires_at;
  const auto ex = conn->stream.lower().get_executor();
  list.push_back(std::move(conn));
  if (at < sweep_at_) arm(ex, at);
}

void UpstreamPool::arm(const boost::asio::any_io_executor& ex, Clock::time_point at) {
  if (!sweep_timer_) sweep_timer_ = std::make_unique<boost::asio::steady_timer>(ex);
  sweep_at_ = at;
  sweep_timer_->expires_at(at);  // cancels a later wait, if any
  // The pool outlives every wait: clear() and the destructor cancel it,
  // and an aborted wait touches nothing.
  sweep_timer_->async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    sweep_at_ = Clock::time_point::max();
    sweep();
  });
}

void UpstreamPool::sweep() {
  const auto now = Clock::now();
  auto next = Clock::time_point::max();
  for (auto it = idle_.begin(); it != idle_.end();) {
    auto& list = it->second;
    std::erase_if(list, [&](const std::unique_ptr<UpstreamConnection>& c) {
      return c->expires_at <= now || !stillUsable(*c);
    });
    for (const auto& c : list) next = std::min(next, c->expires_at);
    it = list.empty() ? idle_.erase(it) : std::next(it);
  }
  if (next != Clock::time_point::max())
    arm(sweep_timer_->get_executor(), std::max(next, now + kSweepCoalesce));
}

void UpstreamPool::clear() {
  if (sweep_timer_) sweep_timer_->cancel();
  sweep_at_ = Clock::time_point::max();
  idle_.clear();
}

}  // namespace infermesh::proxy
