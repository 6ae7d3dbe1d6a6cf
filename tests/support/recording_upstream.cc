#include "tests/support/recording_upstream.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>

namespace infermesh::testing {
namespace {

constexpr std::string_view kCompletion =
    R"({"id":"rec-1","object":"chat.completion","model":"recorded","choices":[{"index":0,"message":)"
    R"({"role":"assistant","content":"ok"},"finish_reason":"stop"}],)"
    R"("usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}})";

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

bool sendAll(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

}  // namespace

bool readMore(int fd, std::string& buf, const std::atomic<bool>& stopping) {
  while (!stopping) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char chunk[16384];
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buf.append(chunk, static_cast<std::size_t>(n));
    return true;
  }
  return false;
}

std::string RecordingUpstream::Request::header(const std::string& name) const {
  for (const auto& [n, v] : headers)
    if (lower(n) == name) return v;
  return {};
}

int RecordingUpstream::Request::count(const std::string& name) const {
  int c = 0;
  for (const auto& h : headers) c += lower(h.first) == name;
  return c;
}

RecordingUpstream::RecordingUpstream(Protocol protocol) : protocol_(protocol) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 64) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return;
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { acceptLoop(); });
}

RecordingUpstream::~RecordingUpstream() {
  stopping_ = true;
  if (acceptor_.joinable()) acceptor_.join();
  {
    std::lock_guard lock(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : connections_) t.join();
  ::close(listen_fd_);
}

void RecordingUpstream::acceptLoop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) continue;
    std::lock_guard lock(mu_);
    fds_.push_back(fd);
    connections_.emplace_back([this, fd] {
      if (protocol_ == Protocol::Http1) serveHttp1(fd);
      else serveHttp2(fd);
      ::shutdown(fd, SHUT_RDWR);
    });
  }
}

void RecordingUpstream::record(Request r) {
  std::lock_guard lock(mu_);
  requests_.push_back(std::move(r));
  cv_.notify_all();
}

std::vector<RecordingUpstream::Request> RecordingUpstream::waitFor(std::size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [&] { return requests_.size() >= n; });
  return requests_;
}

std::size_t RecordingUpstream::received() {
  std::lock_guard lock(mu_);
  return requests_.size();
}

void RecordingUpstream::serveHttp1(int fd) {
  std::string buf;
  while (true) {
    std::size_t end;
    while ((end = buf.find("\r\n\r\n")) == std::string::npos)
      if (!readMore(fd, buf, stopping_)) return;
    Request r;
    r.head = buf.substr(0, end + 2);
    buf.erase(0, end + 4);
    std::size_t line_end = r.head.find("\r\n");
    const std::string line = r.head.substr(0, line_end);
    const auto sp1 = line.find(' '), sp2 = line.rfind(' ');
    r.method = line.substr(0, sp1);
    r.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    for (std::size_t pos = line_end + 2; pos < r.head.size();) {
      const auto eol = r.head.find("\r\n", pos);
      const std::string field = r.head.substr(pos, eol - pos);
      const auto colon = field.find(':');
      std::string value = colon == std::string::npos ? "" : field.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      r.headers.emplace_back(field.substr(0, colon), value);
      pos = eol + 2;
    }
    const std::size_t length = r.header("content-length").empty() ? 0 : std::stoul(r.header("content-length"));
    while (buf.size() < length)
      if (!readMore(fd, buf, stopping_)) return;
    r.body = buf.substr(0, length);
    buf.erase(0, length);
    record(std::move(r));
    const std::string response = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: " +
                                 std::to_string(kCompletion.size()) + "\r\n\r\n" + std::string(kCompletion);
    if (!sendAll(fd, response.data(), response.size())) return;
  }
}

namespace {

struct H2Session {
  RecordingUpstream* owner;
  int fd;
  std::map<std::int32_t, RecordingUpstream::Request> open;
  std::map<std::int32_t, std::string> bodies_out;
  std::function<void(RecordingUpstream::Request)> done;
};

ssize_t readBody(nghttp2_session*, std::int32_t id, std::uint8_t* buf, std::size_t length, std::uint32_t* flags,
                 nghttp2_data_source*, void* user) {
  auto& s = *static_cast<H2Session*>(user);
  std::string& body = s.bodies_out[id];
  const std::size_t n = std::min(length, body.size());
  std::memcpy(buf, body.data(), n);
  body.erase(0, n);
  if (body.empty()) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

void respond(nghttp2_session* session, H2Session& s, std::int32_t id, bool grpc) {
  nghttp2_data_provider provider{};
  provider.read_callback = &readBody;
  auto nv = [](const char* n, const char* v) {
    return nghttp2_nv{reinterpret_cast<std::uint8_t*>(const_cast<char*>(n)),
                      reinterpret_cast<std::uint8_t*>(const_cast<char*>(v)), std::strlen(n), std::strlen(v),
                      NGHTTP2_NV_FLAG_NONE};
  };
  if (grpc) {
    // One empty message (a valid empty ModelInferResponse), then grpc-status 0 as trailers.
    s.bodies_out[id] = std::string("\0\0\0\0\0", 5);
    nghttp2_nv head[] = {nv(":status", "200"), nv("content-type", "application/grpc")};
    nghttp2_submit_response(session, id, head, 2, &provider);
    nghttp2_nv trailers[] = {nv("grpc-status", "0")};
    nghttp2_submit_trailer(session, id, trailers, 1);
  } else {
    s.bodies_out[id] = std::string(kCompletion);
    nghttp2_nv head[] = {nv(":status", "200"), nv("content-type", "application/json")};
    nghttp2_submit_response(session, id, head, 2, &provider);
  }
}

}  // namespace

void RecordingUpstream::serveHttp2(int fd) {
  H2Session s{this, fd, {}, {}, [this](Request r) { record(std::move(r)); }};
  nghttp2_session_callbacks* cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_header_callback(
      cbs, [](nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name, std::size_t namelen,
              const std::uint8_t* value, std::size_t valuelen, std::uint8_t, void* user) -> int {
        auto& s = *static_cast<H2Session*>(user);
        if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
        auto& r = s.open[frame->hd.stream_id];
        const std::string n(reinterpret_cast<const char*>(name), namelen);
        const std::string v(reinterpret_cast<const char*>(value), valuelen);
        if (n == ":method") r.method = v;
        else if (n == ":path") r.target = v;
        r.headers.emplace_back(n, v);
        return 0;
      });
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
      cbs, [](nghttp2_session*, std::uint8_t, std::int32_t id, const std::uint8_t* data, std::size_t len,
              void* user) -> int {
        static_cast<H2Session*>(user)->open[id].body.append(reinterpret_cast<const char*>(data), len);
        return 0;
      });
  nghttp2_session_callbacks_set_on_frame_recv_callback(
      cbs, [](nghttp2_session* session, const nghttp2_frame* frame, void* user) -> int {
        auto& s = *static_cast<H2Session*>(user);
        if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) || !s.open.count(frame->hd.stream_id)) return 0;
        auto r = std::move(s.open[frame->hd.stream_id]);
        s.open.erase(frame->hd.stream_id);
        const bool grpc = r.header("content-type").starts_with("application/grpc");
        s.done(std::move(r));
        respond(session, s, frame->hd.stream_id, grpc);
        return 0;
      });
  nghttp2_session* session;
  nghttp2_session_server_new(&session, cbs, &s);
  nghttp2_session_callbacks_del(cbs);
  nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, nullptr, 0);
  std::string buf;
  bool alive = true;
  while (alive) {
    const std::uint8_t* out;
    ssize_t n;
    while (alive && (n = nghttp2_session_mem_send(session, &out)) > 0) alive = sendAll(fd, out, static_cast<std::size_t>(n));
    buf.clear();
    alive = alive && readMore(fd, buf, stopping_) &&
            nghttp2_session_mem_recv(session, reinterpret_cast<const std::uint8_t*>(buf.data()), buf.size()) >= 0;
  }
  nghttp2_session_del(session);
}

}  // namespace infermesh::testing
