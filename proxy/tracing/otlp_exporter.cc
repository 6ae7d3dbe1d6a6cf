#include "proxy/tracing/otlp_exporter.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include <spdlog/spdlog.h>


namespace infermesh::tracing {
namespace {

using Clock = std::chrono::steady_clock;

// Protobuf wire format, for the few message shapes OTLP spans need.
enum WireType : std::uint8_t { kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5 };

void varint(std::string& out, std::uint64_t v) {
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
}
void tag(std::string& out, unsigned field, WireType type) { varint(out, field << 3 | type); }
void lenField(std::string& out, unsigned field, std::string_view bytes) {
  tag(out, field, kLen);
  varint(out, bytes.size());
  out.append(bytes);
}
template <typename T>
void fixed(std::string& out, unsigned field, T v) {
  tag(out, field, sizeof(T) == 8 ? kFixed64 : kFixed32);
  for (std::size_t i = 0; i < sizeof(T); ++i) out += static_cast<char>(static_cast<std::uint64_t>(v) >> (8 * i));
}

// KeyValue{1: key, 2: AnyValue{1: string | 2: bool | 3: int64 | 4: double}}
void keyValue(std::string& out, unsigned field, const Attribute& a, std::string& scratch, std::string& value) {
  value.clear();
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          lenField(value, 1, v);
        } else if constexpr (std::is_same_v<T, bool>) {
          tag(value, 2, kVarint);
          varint(value, v ? 1 : 0);
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          tag(value, 3, kVarint);
          varint(value, static_cast<std::uint64_t>(v));
        } else {
          std::uint64_t bits;
          static_assert(sizeof bits == sizeof v);
          std::memcpy(&bits, &v, sizeof bits);
          fixed(value, 4, bits);
        }
      },
      a.value);
  scratch.clear();
  lenField(scratch, 1, a.key);
  lenField(scratch, 2, value);
  lenField(out, field, scratch);
}

template <std::size_t N>
std::string_view bytesOf(const std::array<std::uint8_t, N>& id) {
  return {reinterpret_cast<const char*>(id.data()), N};
}

// Waits until the socket can be read (or written); false on timeout.
bool waitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return false;
  }
}

bool sendAll(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && waitFor(fd, POLLOUT, deadline)) continue;
    return false;
  }
  return true;
}

// Reads one HTTP/1.1 response; returns its status (0: none), and whether
// the connection may carry the next request.
unsigned readResponse(int fd, Clock::time_point deadline, bool& keep_alive) {
  std::string in;
  char buf[4096];
  std::size_t head_end = std::string::npos;
  std::size_t need = std::string::npos;  // total bytes of head + body, once known
  bool until_close = false;
  for (;;) {
    if (head_end == std::string::npos) {
      head_end = in.find("\r\n\r\n");
      if (head_end != std::string::npos) {
        std::string head = in.substr(0, head_end);
        for (auto& c : head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        keep_alive = head.find("\r\nconnection: close") == std::string::npos;
        if (auto at = head.find("\r\ncontent-length:"); at != std::string::npos) {
          need = head_end + 4 + std::strtoull(head.c_str() + at + 17, nullptr, 10);
        } else if (head.find("\r\ntransfer-encoding: chunked") != std::string::npos) {
          need = std::string::npos;  // to the last chunk, below
        } else {
          until_close = true;
          keep_alive = false;
        }
      }
    }
    if (head_end != std::string::npos) {
      const bool done = need != std::string::npos ? in.size() >= need
                        : !until_close            ? in.find("\r\n0\r\n\r\n", head_end) != std::string::npos
                                                  : false;
      if (done) break;
    }
    if (in.size() > (1u << 20) || !waitFor(fd, POLLIN, deadline)) return 0;
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) {
      keep_alive = false;
      if (until_close && head_end != std::string::npos) break;
      return 0;
    }
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return 0;
    }
    in.append(buf, static_cast<std::size_t>(n));
  }
  // "HTTP/1.1 200 OK"
  if (in.size() < 12 || in.compare(0, 5, "HTTP/") != 0) return 0;
  return static_cast<unsigned>(std::strtoul(in.c_str() + 9, nullptr, 10));
}

std::mutex g_registry_mu;
std::map<std::string, std::weak_ptr<OtlpExporter>> g_registry;

}  // namespace

std::string ExporterOptions::key() const {
  return host + '\n' + port + '\n' + path + '\n' + service_name + '\n' + std::to_string(max_queue) + '\n' +
         std::to_string(max_batch) + '\n' + std::to_string(flush_interval.count()) + '\n' +
         std::to_string(timeout.count());
}

std::shared_ptr<OtlpExporter> OtlpExporter::forCollector(const ExporterOptions& options) {
  std::lock_guard lock(g_registry_mu);
  auto& slot = g_registry[options.key()];
  if (auto live = slot.lock()) return live;
  auto made = std::make_shared<OtlpExporter>(options);
  slot = made;
  return made;
}

OtlpExporter::OtlpExporter(ExporterOptions options) : options_(std::move(options)) {
  auto& m = stats::FilterMetrics::instance();
  const char* help = "Spans by what became of them: exported, or dropped (queue full, export failed)";
  exported_ = m.sharedCounter("infermesh_tracing_spans_total", help, {{"outcome", "exported"}});
  dropped_full_ = m.sharedCounter("infermesh_tracing_spans_total", help, {{"outcome", "dropped_queue_full"}});
  dropped_failed_ = m.sharedCounter("infermesh_tracing_spans_total", help, {{"outcome", "dropped_export_failed"}});
  const char* batches = "OTLP export requests by result";
  batches_ok_ = m.sharedCounter("infermesh_tracing_exports_total", batches, {{"result", "ok"}});
  batches_failed_ = m.sharedCounter("infermesh_tracing_exports_total", batches, {{"result", "error"}});
}

OtlpExporter::~OtlpExporter() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
  disconnect();
}

void OtlpExporter::enqueue(std::vector<SpanData>&& spans) {
  bool full_batch = false;
  {
    std::lock_guard lock(mu_);
    if (queue_.size() + spans.size() > options_.max_queue) {
      dropped_full_.inc(spans.size());
      return;
    }
    for (auto& s : spans) queue_.push_back(std::move(s));
    full_batch = queue_.size() >= options_.max_batch;
    // The thread starts with the first span, so building a config (a
    // validation, a reload) starts nothing.
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
  }
  if (full_batch) wake_.notify_one();
}

void OtlpExporter::run() {
  std::vector<SpanData> batch;
  for (;;) {
    {
      std::unique_lock lock(mu_);
      wake_.wait_for(lock, options_.flush_interval, [&] { return stop_ || queue_.size() >= options_.max_batch; });
      if (queue_.empty()) {
        if (stop_) return;
        continue;
      }
      const std::size_t n = std::min(queue_.size(), options_.max_batch);
      batch.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.begin() + n));
      queue_.erase(queue_.begin(), queue_.begin() + n);
    }
    std::string error;
    if (post(encode(batch, options_.service_name), error)) {
      exported_.inc(batch.size());
      batches_ok_.inc();
    } else {
      dropped_failed_.inc(batch.size());
      batches_failed_.inc();
      spdlog::warn("tracing: export of {} spans to {}:{} failed: {}", batch.size(), options_.host, options_.port, error);
      // Stopping with the collector away: the rest would each wait out the
      // timeout too.
      std::lock_guard lock(mu_);
      if (stop_) {
        dropped_failed_.inc(queue_.size());
        queue_.clear();
      }
    }
    batch.clear();
  }
}

bool OtlpExporter::connect(std::string& error) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (const int rc = ::getaddrinfo(options_.host.c_str(), options_.port.c_str(), &hints, &found); rc != 0) {
    error = std::string("cannot resolve the collector: ") + ::gai_strerror(rc);
    return false;
  }
  const auto deadline = Clock::now() + options_.timeout;
  error = "cannot connect to the collector";
  for (addrinfo* a = found; a != nullptr && fd_ < 0; a = a->ai_next) {
    const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc < 0 && errno == EINPROGRESS && waitFor(fd, POLLOUT, deadline)) {
      int so_error = 0;
      socklen_t len = sizeof so_error;
      ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
      rc = so_error == 0 ? 0 : -1;
      if (so_error != 0) error = std::string("cannot connect to the collector: ") + std::strerror(so_error);
    }
    if (rc == 0) fd_ = fd;
    else ::close(fd);
  }
  ::freeaddrinfo(found);
  return fd_ >= 0;
}

void OtlpExporter::disconnect() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool OtlpExporter::post(const std::string& body, std::string& error) {
  std::string request = "POST " + options_.path + " HTTP/1.1\r\nhost: " + options_.host + ':' + options_.port +
                        "\r\ncontent-type: application/x-protobuf\r\ncontent-length: " + std::to_string(body.size()) +
                        "\r\n\r\n";
  request += body;
  // A kept-alive connection the collector closed meanwhile gets one more
  // try on a new connection; a new connection that fails does not.
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = fd_ >= 0;
    if (!reused && !connect(error)) return false;
    const auto deadline = Clock::now() + options_.timeout;
    bool keep_alive = true;
    const unsigned status = sendAll(fd_, request, deadline) ? readResponse(fd_, deadline, keep_alive) : 0;
    if (!keep_alive || status == 0) disconnect();
    if (status >= 200 && status < 300) return true;
    if (status != 0) {
      error = "the collector answered " + std::to_string(status);
      return false;
    }
    error = "no answer from the collector";
    if (!reused) return false;
  }
  return false;
}

std::string OtlpExporter::encode(const std::vector<SpanData>& spans, const std::string& service_name) {
  std::string scratch, value, span, scope;
  // ScopeSpans{1: InstrumentationScope{1: name}, 2: Span...}
  lenField(scope, 1, std::string_view("\x0a\x09infermesh", 11));
  for (const auto& s : spans) {
    span.clear();
    lenField(span, 1, bytesOf(s.trace_id));
    lenField(span, 2, bytesOf(s.span_id));
    if (!s.tracestate.empty()) lenField(span, 3, s.tracestate);
    if (!isZero(s.parent_id)) lenField(span, 4, bytesOf(s.parent_id));
    lenField(span, 5, s.name);
    tag(span, 6, kVarint);
    varint(span, static_cast<std::uint64_t>(s.kind));
    fixed(span, 7, s.start_ns);
    fixed(span, 8, s.end_ns);
    for (const auto& a : s.attributes) keyValue(span, 9, a, scratch, value);
    if (s.error) {  // Status{2: message, 3: code = ERROR}
      scratch.clear();
      if (!s.status_message.empty()) lenField(scratch, 2, s.status_message);
      tag(scratch, 3, kVarint);
      varint(scratch, 2);
      lenField(span, 15, scratch);
    }
    // W3C flags in the low byte; bit 8 says whether the parent's remote
    // status is known, bit 9 that it is remote.
    fixed(span, 16, static_cast<std::uint32_t>(s.flags | 0x100u | (s.remote_parent ? 0x200u : 0u)));
    lenField(scope, 2, span);
  }
  // ResourceSpans{1: Resource{1: KeyValue service.name}, 2: ScopeSpans}
  std::string resource;
  keyValue(resource, 1, Attribute{"service.name", service_name}, scratch, value);
  std::string rs;
  lenField(rs, 1, resource);
  lenField(rs, 2, scope);
  std::string out;
  out.reserve(rs.size() + 8);
  lenField(out, 1, rs);  // ExportTraceServiceRequest{1: ResourceSpans}
  return out;
}

}  // namespace infermesh::tracing
