#include "filters/authn/jwks_source.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "proxy/tls/tls_common.h"

namespace infermesh::authn {
namespace {

using Clock = std::chrono::steady_clock;

bool startsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != prefix[i]) return false;
  }
  return true;
}

struct Uri {
  std::string host;         // without brackets
  std::uint16_t port = 443;
  std::string host_header;  // host[:port], IPv6 in brackets
  std::string target;       // path and query
  bool host_is_ip = false;
};

bool parseUri(std::string_view uri, Uri& out, std::string& error) {
  if (startsWithIgnoreCase(uri, "http://")) {
    error = "only https:// is accepted: keys fetched over http:// could be replaced by anyone on the path";
    return false;
  }
  if (!startsWithIgnoreCase(uri, "https://")) {
    error = "must be an https:// URL";
    return false;
  }
  std::string_view rest = uri.substr(8);
  for (const unsigned char c : rest) {
    if (c <= 0x20 || c >= 0x7f) {
      error = "contains a space, control character or non-ASCII byte";
      return false;
    }
  }
  const auto end = rest.find_first_of("/?#");
  const std::string_view authority = rest.substr(0, end);
  std::string_view target = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  target = target.substr(0, target.find('#'));
  out.target = target.empty() || target[0] != '/' ? "/" + std::string(target) : std::string(target);
  if (authority.find('@') != std::string_view::npos) {
    error = "must not carry a user name or password";
    return false;
  }
  std::string_view host = authority, port;
  if (authority.starts_with('[')) {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) {
      error = "has an unclosed [ in its host";
      return false;
    }
    host = authority.substr(1, close - 1);
    const auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') {
        error = "has bytes after its [host]";
        return false;
      }
      port = after.substr(1);
    }
  } else if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) {
    error = "has no host";
    return false;
  }
  out.host = std::string(host);
  unsigned char addr[16];
  out.host_is_ip = ::inet_pton(AF_INET, out.host.c_str(), addr) == 1 || ::inet_pton(AF_INET6, out.host.c_str(), addr) == 1;
  if (!out.host_is_ip) {
    for (const char c : host) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') {
        error = "has an invalid host name";
        return false;
      }
    }
  }
  if (!port.empty() || authority.ends_with(':')) {
    unsigned value = 0;
    for (const char c : port) {
      if (c < '0' || c > '9' || value > 65535) break;
      value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (port.empty() || port.size() > 5 || value == 0 || value > 65535 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      error = "has an invalid port";
      return false;
    }
    out.port = static_cast<std::uint16_t>(value);
  }
  const bool v6 = out.host.find(':') != std::string::npos;
  out.host_header = v6 ? "[" + out.host + "]" : out.host;
  if (out.port != 443) out.host_header += ":" + std::to_string(out.port);
  return true;
}

// ---------------------------------------------------------------- blocking HTTPS GET

// What a fetch watches besides its socket: the deadline, and the source's
// wake fd (written when the source is destroyed).
struct Limits {
  Clock::time_point deadline;
  int wake_fd;
};

enum class Wait { Ready, TimedOut, Stopped };

Wait waitFor(int fd, short events, const Limits& limits) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(limits.deadline - Clock::now()).count();
    if (left <= 0) return Wait::TimedOut;
    pollfd fds[2] = {{fd, events, 0}, {limits.wake_fd, POLLIN, 0}};
    const int n = ::poll(fds, 2, static_cast<int>(std::min<long long>(left, 1000)));
    if (n < 0 && errno != EINTR) return Wait::TimedOut;
    if (fds[1].revents != 0) return Wait::Stopped;
    if (n > 0 && fds[0].revents != 0) return Wait::Ready;
  }
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { if (fd_ >= 0) ::close(fd_); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// getaddrinfo_a rather than getaddrinfo: a resolver that hangs must not
// hold the source's thread past its deadline or its destruction.
bool resolve(const Uri& uri, const Limits& limits, std::vector<sockaddr_storage>& out, std::string& error) {
  struct Request {
    gaicb cb{};
    addrinfo hints{};
    std::string host, service;
  };
  auto req = std::make_unique<Request>();
  req->host = uri.host;
  req->service = std::to_string(uri.port);
  req->hints.ai_socktype = SOCK_STREAM;
  req->hints.ai_flags = uri.host_is_ip ? AI_NUMERICHOST : AI_ADDRCONFIG;
  req->cb.ar_name = req->host.c_str();
  req->cb.ar_service = req->service.c_str();
  req->cb.ar_request = &req->hints;
  gaicb* list[] = {&req->cb};
  if (const int rc = ::getaddrinfo_a(GAI_NOWAIT, list, 1, nullptr); rc != 0) {
    error = std::string("resolving ") + uri.host + ": " + ::gai_strerror(rc);
    return false;
  }
  int rc;
  while ((rc = ::gai_error(&req->cb)) == EAI_INPROGRESS) {
    pollfd wake{limits.wake_fd, POLLIN, 0};
    const bool stopped = ::poll(&wake, 1, 0) > 0;
    if (stopped || Clock::now() >= limits.deadline) {
      if (::gai_cancel(&req->cb) == EAI_NOTCANCELED) {
        // The resolver thread still owns the request and will write into it;
        // it is left to it (a small leak, only when a lookup hangs).
        req.release();
      }
      error = stopped ? "stopped" : "resolving " + uri.host + ": timed out";
      if (req && req->cb.ar_result != nullptr) ::freeaddrinfo(req->cb.ar_result);
      return false;
    }
    const timespec slice{0, 20 * 1000 * 1000};
    const gaicb* const wait_list[] = {&req->cb};
    ::gai_suspend(wait_list, 1, &slice);
  }
  if (rc != 0) {
    error = std::string("resolving ") + uri.host + ": " + ::gai_strerror(rc);
    return false;
  }
  for (addrinfo* ai = req->cb.ar_result; ai != nullptr; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
    sockaddr_storage ss{};
    std::memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
    out.push_back(ss);
  }
  ::freeaddrinfo(req->cb.ar_result);
  if (out.empty()) error = "resolving " + uri.host + ": no address";
  return !out.empty();
}

bool connectAny(const std::vector<sockaddr_storage>& addrs, const Limits& limits, Fd& sock, std::string& error) {
  for (const auto& ss : addrs) {
    const socklen_t len = ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
    sock.reset(::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (sock.get() < 0) {
      error = std::string("socket: ") + std::strerror(errno);
      continue;
    }
    if (::connect(sock.get(), reinterpret_cast<const sockaddr*>(&ss), len) == 0) return true;
    if (errno != EINPROGRESS) {
      error = std::string("connect: ") + std::strerror(errno);
      continue;
    }
    const Wait w = waitFor(sock.get(), POLLOUT, limits);
    if (w == Wait::Stopped) {
      error = "stopped";
      return false;
    }
    if (w == Wait::TimedOut) {
      error = "connect: timed out";
      return false;
    }
    int so_error = 0;
    socklen_t so_len = sizeof so_error;
    ::getsockopt(sock.get(), SOL_SOCKET, SO_ERROR, &so_error, &so_len);
    if (so_error == 0) return true;
    error = std::string("connect: ") + std::strerror(so_error);
  }
  return false;
}

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};

// Runs one SSL call until it completes, waiting on the socket as OpenSSL
// asks. >0: done; 0: clean end of stream; <0: error (in `error`).
template <typename Op>
int sslCall(SSL* ssl, int fd, const Limits& limits, const char* what, std::string& error, Op op) {
  for (;;) {
    ERR_clear_error();
    const int r = op();
    if (r > 0) return r;
    const int e = SSL_get_error(ssl, r);
    short events;
    if (e == SSL_ERROR_WANT_READ) events = POLLIN;
    else if (e == SSL_ERROR_WANT_WRITE) events = POLLOUT;
    else if (e == SSL_ERROR_ZERO_RETURN) return 0;
    else {
      const long verify = SSL_get_verify_result(ssl);
      if (verify != X509_V_OK)
        error = std::string(what) + ": certificate verification failed: " + X509_verify_cert_error_string(verify);
      else if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        error = std::string(what) + ": connection closed";
      else
        error = std::string(what) + ": " + tls::opensslError();
      ERR_clear_error();
      return -1;
    }
    const Wait w = waitFor(fd, events, limits);
    if (w != Wait::Ready) {
      error = w == Wait::Stopped ? "stopped" : std::string(what) + ": timed out";
      return -1;
    }
  }
}

bool httpsGet(const Uri& uri, const std::string& ca_file, const Limits& limits, std::string& body, std::string& error) {
  std::vector<sockaddr_storage> addrs;
  Fd sock;
  if (!resolve(uri, limits, addrs, error) || !connectAny(addrs, limits, sock, error)) return false;

  std::unique_ptr<SSL_CTX, SslCtxFree> ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) {
    error = "TLS: " + tls::opensslError();
    return false;
  }
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  // Framing (Content-Length, chunked) decides whether a body is whole; a
  // close-delimited body must still parse as a JWKS.
  SSL_CTX_set_options(ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
  // Loaded per fetch, so a rotated trust bundle is picked up without a restart.
  const int loaded = ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx.get())
                                     : SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr);
  if (loaded != 1) {
    error = "loading " + (ca_file.empty() ? std::string("the system trust store") : "ca_file " + ca_file) + ": " +
            tls::opensslError();
    return false;
  }
  std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx.get()));
  if (!ssl || SSL_set_fd(ssl.get(), sock.get()) != 1) {
    error = "TLS: " + tls::opensslError();
    return false;
  }
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  const bool named = uri.host_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, uri.host.c_str()) == 1
                                    : SSL_set_tlsext_host_name(ssl.get(), uri.host.c_str()) == 1 &&
                                          X509_VERIFY_PARAM_set1_host(param, uri.host.c_str(), 0) == 1;
  if (!named) {
    error = "TLS: cannot check the name " + uri.host;
    ERR_clear_error();
    return false;
  }
  SSL_set_connect_state(ssl.get());
  SSL* s = ssl.get();
  const int fd = sock.get();
  if (sslCall(s, fd, limits, "TLS handshake", error, [&] { return SSL_do_handshake(s); }) <= 0) {
    if (error.empty()) error = "TLS handshake: connection closed";
    return false;
  }

  const std::string request = "GET " + uri.target + " HTTP/1.1\r\nHost: " + uri.host_header +
                              "\r\nAccept: application/jwk-set+json, application/json\r\n"
                              "User-Agent: infermesh\r\nConnection: close\r\n\r\n";
  std::size_t sent = 0;
  while (sent < request.size()) {
    const int n = sslCall(s, fd, limits, "sending the request", error, [&] {
      return SSL_write(s, request.data() + sent, static_cast<int>(request.size() - sent));
    });
    if (n <= 0) {
      if (error.empty()) error = "sending the request: connection closed";
      return false;
    }
    sent += static_cast<std::size_t>(n);
  }

  namespace http = boost::beast::http;
  http::response_parser<http::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(kMaxJwksBytes);
  parser.eager(true);
  std::string pending;
  char buf[16 * 1024];
  boost::beast::error_code ec;
  while (!parser.is_done()) {
    const int n = sslCall(s, fd, limits, "reading the response", error,
                          [&] { return SSL_read(s, buf, static_cast<int>(sizeof buf)); });
    if (n < 0) return false;
    if (n == 0) {
      parser.put_eof(ec);
      if (ec) {
        error = "the response ended early (" + ec.message() + ")";
        return false;
      }
      break;
    }
    pending.append(buf, static_cast<std::size_t>(n));
    while (!pending.empty() && !parser.is_done()) {
      const std::size_t used = parser.put(boost::asio::buffer(pending), ec);
      pending.erase(0, used);
      if (ec == http::error::need_more) {
        ec = {};
        break;
      }
      if (ec) {
        error = "bad response: " + ec.message();
        return false;
      }
      if (parser.is_header_done() && parser.get().result_int() != 200) {
        error = "HTTP status " + std::to_string(parser.get().result_int());
        return false;
      }
    }
  }
  if (parser.get().result_int() != 200) {
    error = "HTTP status " + std::to_string(parser.get().result_int());
    return false;
  }
  body = std::move(parser.get().body());
  return true;
}

}  // namespace

bool validateJwksSpec(const JwksSpec& spec, std::string& error) {
  if (spec.file.empty() == spec.uri.empty()) {
    error = "exactly one of file and uri must be set";
    return false;
  }
  if (!spec.uri.empty()) {
    Uri uri;
    if (!parseUri(spec.uri, uri, error)) {
      error = "uri \"" + spec.uri + "\": " + error;
      return false;
    }
  } else if (!spec.ca_file.empty()) {
    error = "ca_file applies to a uri, not a file";
    return false;
  }
  if (spec.refresh.count() <= 0 || spec.timeout.count() <= 0 || spec.min_refetch.count() < 0) {
    error = "refresh and timeout must be positive, min_refetch not negative";
    return false;
  }
  return true;
}

JwksSource::JwksSource(JwksSpec spec) : spec_(std::move(spec)) {
  std::string error;
  if (!validateJwksSpec(spec_, error)) {
    last_error_ = error;
    first_done_ = true;
    fetches_failed_ = 1;
    spdlog::warn("JWKS: {}", error);
    return;
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (!spec_.file.empty()) {
    loadFile(true);
    first_done_ = true;
  }
  thread_ = std::thread([this] { run(); });
}

JwksSource::~JwksSource() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (wake_fd_ >= 0) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
  }
  if (thread_.joinable()) thread_.join();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

std::string JwksSource::name() const { return spec_.file.empty() ? spec_.uri : spec_.file; }

std::string JwksSource::lastError() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

void JwksSource::onUnknownKid() {
  if (!thread_.joinable()) return;
  const std::int64_t now = Clock::now().time_since_epoch().count();
  std::int64_t next = next_unknown_kid_.load(std::memory_order_relaxed);
  if (now < next) return;
  const auto gap = std::chrono::duration_cast<Clock::duration>(spec_.min_refetch).count();
  if (!next_unknown_kid_.compare_exchange_strong(next, now + gap, std::memory_order_relaxed)) return;
  unknown_kid_refetches_.fetch_add(1, std::memory_order_relaxed);
  // At most one caller per min_refetch gets here, and the source's thread
  // never holds the lock across a load, so this does not wait on I/O.
  {
    std::lock_guard lock(mu_);
    refetch_requested_ = true;
  }
  cv_.notify_all();
}

bool JwksSource::waitReady(std::chrono::milliseconds limit) {
  std::unique_lock lock(mu_);
  ready_cv_.wait_for(lock, limit, [&] { return first_done_; });
  return keys() != nullptr;
}

void JwksSource::run() {
  const bool is_file = !spec_.file.empty();
  // A file costs a stat() to check, so it is checked at least every second.
  const auto poll = std::min<std::chrono::milliseconds>(spec_.refresh, std::chrono::seconds(1));
  const auto first_backoff = std::min<std::chrono::milliseconds>(spec_.refresh, std::chrono::seconds(1));
  const auto max_backoff = std::min<std::chrono::milliseconds>(spec_.refresh, std::chrono::seconds(60));
  auto backoff = first_backoff;
  auto next = Clock::now() + (is_file ? poll : std::chrono::milliseconds(0));
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_until(lock, next, [&] { return stopping_.load() || refetch_requested_; });
    if (stopping_) break;
    const bool forced = std::exchange(refetch_requested_, false);
    lock.unlock();
    const bool ok = is_file ? loadFile(forced) : fetchUri();
    lock.lock();
    if (!first_done_) {
      first_done_ = true;
      ready_cv_.notify_all();
    }
    const auto now = Clock::now();
    if (is_file) {
      next = now + poll;
    } else if (ok) {
      next = now + spec_.refresh;
      backoff = first_backoff;
    } else {
      next = now + backoff;
      backoff = std::min(backoff * 2, max_backoff);
    }
  }
}

bool JwksSource::loadFile(bool forced) {
  struct stat st{};
  FileStamp stamp{-2, -2, -2};  // missing
  const bool found = ::stat(spec_.file.c_str(), &st) == 0;
  const int stat_errno = errno;
  if (found)
    stamp = {static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec,
             static_cast<std::int64_t>(st.st_size), static_cast<std::int64_t>(st.st_ino)};
  {
    std::lock_guard lock(mu_);
    if (!forced && stamp == stamp_) return !failing_;
    stamp_ = stamp;
  }
  if (!found) {
    fail("cannot read " + spec_.file + ": " + std::strerror(stat_errno));
    return false;
  }
  std::ifstream in(spec_.file, std::ios::binary);
  std::string body;
  if (in) {
    body.resize(kMaxJwksBytes + 1);
    in.read(body.data(), static_cast<std::streamsize>(body.size()));
    body.resize(static_cast<std::size_t>(in.gcount()));
  }
  if (!in && !in.eof()) {
    fail("cannot read " + spec_.file);
    return false;
  }
  return accept(body);
}

bool JwksSource::fetchUri() {
  Uri uri;
  std::string error, body;
  if (!parseUri(spec_.uri, uri, error)) {
    fail(error);
    return false;
  }
  const Limits limits{Clock::now() + spec_.timeout, wake_fd_};
  if (!httpsGet(uri, spec_.ca_file, limits, body, error)) {
    if (!stopping_) fail(error);
    return false;
  }
  return accept(body);
}

bool JwksSource::accept(const std::string& body) {
  {
    std::lock_guard lock(mu_);
    if (body == last_body_ && keys() != nullptr) {
      fetches_ok_.fetch_add(1, std::memory_order_relaxed);
      if (failing_) spdlog::info("JWKS {}: loaded again, keys unchanged", name());
      failing_ = false;
      last_error_.clear();
      return true;
    }
  }
  std::string error;
  auto set = JwkSet::parse(body, error);
  if (set && set->size() == 0) {
    // Installing an empty set would refuse every token; keeping the old keys
    // refuses none that were good a moment ago.
    error = "no usable key";
    if (set->skipped() > 0) error += " (" + set->skipReasons().front() + ")";
    set.reset();
  }
  if (!set) {
    fail(error);
    return false;
  }
  for (const auto& why : set->skipReasons()) spdlog::warn("JWKS {}: skipped {}", name(), why);
  const auto count = set->size();
  keys_.store(std::move(set), std::memory_order_release);
  fetches_ok_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  spdlog::info("JWKS {}: {} key{} loaded{}", name(), count, count == 1 ? "" : "s", failing_ ? " (recovered)" : "");
  last_body_ = body;
  failing_ = false;
  last_error_.clear();
  return true;
}

void JwksSource::fail(std::string error) {
  fetches_failed_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mu_);
  if (!failing_)
    spdlog::warn("JWKS {}: {}; {}", name(), error,
                 keys() != nullptr ? "keeping the last good keys" : "no keys yet, tokens are refused");
  failing_ = true;
  last_error_ = std::move(error);
}

JwksSources& JwksSources::instance() {
  static JwksSources sources;
  return sources;
}

std::shared_ptr<JwksSource> JwksSources::get(const JwksSpec& spec) {
  std::lock_guard lock(mu_);
  std::erase_if(sources_, [](const auto& entry) { return entry.second.expired(); });
  for (const auto& [existing, weak] : sources_)
    if (existing == spec)
      if (auto live = weak.lock()) return live;
  auto source = std::make_shared<JwksSource>(spec);
  sources_.emplace_back(spec, source);
  return source;
}

}  // namespace infermesh::authn
