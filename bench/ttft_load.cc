// Load for LLM-style endpoints, N streaming chat requests in all (bounded
// in time too); the time to first token (first response body byte) and
// total time of each are recorded. Prints one line of results.
// Closed loop (default): C connections each send requests back to back.
// Open loop (--rate R): requests arrive as a Poisson process at R per
// second (seeded), each on an idle connection or a new one (at most C in
// flight; times count from the arrival, so a late start counts against it).
// Prompts: "benchmark", or with --prefixes K one of K shared prefixes of
// --prefix-chars characters (a system prompt, for prefix caches) and a
// unique --suffix-chars tail. Loopback only, for benchmarks.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

struct Options {
  int port = 0;
  int connections = 16;
  int requests = 1000;
  double max_seconds = 60;
  std::string model = "chat-model";
  std::string path = "/v1/chat/completions";
  std::vector<std::string> headers;  // "name: value"
  double rate = 0;  // open loop: arrivals per second; 0: closed loop
  std::uint64_t seed = 1;
  int prefixes = 0;  // shared prompt prefixes; 0: the fixed prompt
  int prefix_chars = 2000;
  int suffix_chars = 200;
};

struct Results {
  std::vector<double> ttft_ms, total_ms;
  int errors = 0;
  int started = 0;
};

// The request for the i-th prompt.
struct Prompts {
  const Options& o;
  std::vector<std::string> prefixes;
  std::mt19937_64 rng;
  explicit Prompts(const Options& opt) : o(opt), rng(opt.seed) {
    for (int k = 0; k < o.prefixes; ++k) {
      std::string p = "system prompt " + std::to_string(k) + ":";
      while (static_cast<int>(p.size()) < o.prefix_chars) p += " policy" + std::to_string(rng() % 1000);
      p.resize(static_cast<std::size_t>(o.prefix_chars));
      prefixes.push_back(std::move(p));
    }
  }
  std::string next() {
    std::string content = "benchmark";
    if (!prefixes.empty()) {
      content = prefixes[rng() % prefixes.size()];
      std::string tail = " question " + std::to_string(rng());
      while (static_cast<int>(tail.size()) < o.suffix_chars) tail += " w" + std::to_string(rng() % 100000);
      tail.resize(static_cast<std::size_t>(o.suffix_chars));
      content += tail;
    }
    const std::string body = "{\"model\":\"" + o.model + "\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"" +
                             content + "\"}]}";
    std::string request = "POST " + o.path + " HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n";
    for (const auto& h : o.headers) request += h + "\r\n";
    request += "content-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    return request;
  }
};

struct Connection {
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  bool connected = false;
  explicit Connection(asio::any_io_executor ex) : stream(std::move(ex)) {}
};

// One request on `c` (connecting first if needed); times from `start`.
asio::awaitable<void> exchange(const Options& o, Connection& c, const std::string& request, Results& res,
                               Clock::time_point start) {
  std::array<char, 8192> sink;
  if (!c.connected) {
    c.stream.expires_after(std::chrono::seconds(5));
    auto [ec] = co_await c.stream.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), o.port), kTuple);
    if (ec) {
      ++res.errors;
      c.stream.close();
      co_return;
    }
    c.connected = true;
    c.buffer.clear();
  }
  c.stream.expires_after(std::chrono::seconds(60));
  auto [wec, wn] = co_await asio::async_write(c.stream, asio::buffer(request), kTuple);
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  auto [hec, hn] = wec ? std::tuple<boost::system::error_code, std::size_t>{wec, 0}
                       : co_await http::async_read_header(c.stream, c.buffer, parser, kTuple);
  if (hec) {
    ++res.errors;
    c.stream.close();
    c.connected = false;
    co_return;
  }
  double ttft = -1;
  bool failed = parser.get().result_int() >= 400;
  while (!parser.is_done()) {
    parser.get().body().data = sink.data();
    parser.get().body().size = sink.size();
    auto [ec, n] = co_await http::async_read_some(c.stream, c.buffer, parser, kTuple);
    if (ec && ec != http::error::need_buffer) {
      failed = true;
      break;
    }
    if (ttft < 0 && parser.get().body().size < sink.size())
      ttft = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  }
  if (failed) {
    ++res.errors;
    if (!parser.is_done() || !parser.keep_alive()) {
      c.stream.close();
      c.connected = false;
    }
    co_return;
  }
  res.ttft_ms.push_back(ttft < 0 ? std::chrono::duration<double, std::milli>(Clock::now() - start).count() : ttft);
  res.total_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
  if (!parser.keep_alive()) {
    c.stream.close();
    c.connected = false;
  }
}

asio::awaitable<void> client(const Options& o, Prompts& prompts, Results& res, Clock::time_point stop_at) {
  Connection c(co_await asio::this_coro::executor);
  while (res.started < o.requests && Clock::now() < stop_at) {
    ++res.started;
    co_await exchange(o, c, prompts.next(), res, Clock::now());
  }
}

// Open loop: Poisson arrivals; idle connections are reused.
asio::awaitable<void> arrivals(const Options& o, Prompts& prompts, Results& res, Clock::time_point stop_at) {
  auto ex = co_await asio::this_coro::executor;
  std::vector<std::unique_ptr<Connection>> idle;
  int in_flight = 0;
  std::mt19937_64 rng(o.seed * 7919 + 1);
  std::exponential_distribution<double> gap(o.rate);
  asio::steady_timer timer(ex);
  auto next = Clock::now();
  while (res.started < o.requests && Clock::now() < stop_at) {
    next += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
    timer.expires_at(next);
    co_await timer.async_wait(kTuple);
    while (in_flight >= o.connections && Clock::now() < stop_at) {  // bounded: wait for one to finish
      timer.expires_after(std::chrono::milliseconds(1));
      co_await timer.async_wait(kTuple);
    }
    ++res.started;
    ++in_flight;
    std::unique_ptr<Connection> c;
    if (!idle.empty()) {
      c = std::move(idle.back());
      idle.pop_back();
    } else {
      c = std::make_unique<Connection>(ex);
    }
    asio::co_spawn(
        ex,
        [&, c = std::move(c), request = prompts.next(), arrived = next]() mutable -> asio::awaitable<void> {
          co_await exchange(o, *c, request, res, arrived);
          --in_flight;
          if (c->connected) idle.push_back(std::move(c));
        },
        asio::detached);
  }
  // Let the last ones finish (the io_context runs until they do); close
  // idle connections now so it can stop.
  while (in_flight > 0 && Clock::now() < stop_at + std::chrono::seconds(60)) {
    for (auto& c : idle) c->stream.close();
    idle.clear();
    timer.expires_after(std::chrono::milliseconds(5));
    co_await timer.async_wait(kTuple);
  }
  for (auto& c : idle) c->stream.close();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--port") o.port = std::stoi(v);
    else if (a == "--connections") o.connections = std::stoi(v);
    else if (a == "--requests") o.requests = std::stoi(v);
    else if (a == "--max-seconds") o.max_seconds = std::stod(v);
    else if (a == "--model") o.model = v;
    else if (a == "--path") o.path = v;
    else if (a == "--header") o.headers.push_back(v);
    else if (a == "--rate") o.rate = std::stod(v);
    else if (a == "--seed") o.seed = std::stoull(v);
    else if (a == "--prefixes") o.prefixes = std::stoi(v);
    else if (a == "--prefix-chars") o.prefix_chars = std::stoi(v);
    else if (a == "--suffix-chars") o.suffix_chars = std::stoi(v);
    else {
      std::fprintf(stderr,
                   "usage: infermesh-ttft-load --port N [--connections C] [--requests N] [--max-seconds S]\n"
                   "       [--model M] [--path P] [--header 'name: value']...\n"
                   "       [--rate PER_SECOND] [--seed N] [--prefixes K] [--prefix-chars N] [--suffix-chars N]\n");
      return 2;
    }
  }
  if (o.port <= 0) {
    std::fprintf(stderr, "--port is required\n");
    return 2;
  }
  asio::io_context io(1);
  Results res;
  const auto start = Clock::now();
  const auto stop_at = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.max_seconds));
  Prompts prompts(o);
  if (o.rate > 0) asio::co_spawn(io, arrivals(o, prompts, res, stop_at), asio::detached);
  else
    for (int c = 0; c < o.connections; ++c) asio::co_spawn(io, client(o, prompts, res, stop_at), asio::detached);
  io.run();
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  const std::size_t done = res.ttft_ms.size();
  std::printf("requests=%zu errors=%d error_rate=%.4f rps=%.1f ttft_p50_ms=%.1f ttft_p99_ms=%.1f total_p50_ms=%.1f "
              "total_p99_ms=%.1f\n",
              done + static_cast<std::size_t>(res.errors), res.errors,
              static_cast<double>(res.errors) / std::max<double>(1, static_cast<double>(done) + res.errors),
              static_cast<double>(done) / secs, percentile(res.ttft_ms, 50), percentile(res.ttft_ms, 99),
              percentile(res.total_ms, 50), percentile(res.total_ms, 99));
  return 0;
}
