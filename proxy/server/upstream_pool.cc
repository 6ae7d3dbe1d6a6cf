#include "proxy/server/upstream_pool.h"

#include <sys/socket.h>

namespace infermesh::proxy {
namespace {

// The peer has not closed and sent nothing unsolicited.
bool stillUsable(UpstreamConnection& c) {
  if (c.buffer.size() != 0) return false;
  char byte;
  ssize_t n = ::recv(c.stream.lower().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

std::unique_ptr<UpstreamConnection> UpstreamPool::take(std::uint64_t key) {
  auto it = idle_.find(key);
  if (it == idle_.end()) return nullptr;
  auto& list = it->second;
  const auto now = std::chrono::steady_clock::now();
  while (!list.empty()) {
    auto conn = std::move(list.back());
    list.pop_back();
    if (now - conn->idle_since < kMaxIdleTime && stillUsable(*conn)) return conn;
  }
  return nullptr;
}

void UpstreamPool::put(std::uint64_t key, std::unique_ptr<UpstreamConnection> conn) {
  auto& list = idle_[key];
  if (list.size() >= kMaxIdlePerEndpoint) return;  // dropping closes it
  conn->idle_since = std::chrono::steady_clock::now();
  list.push_back(std::move(conn));
}

}  // namespace infermesh::proxy
