// Closed-loop load for LLM-style endpoints: C connections each send
// streaming chat requests back to back, N in all (bounded in time too), and
// the time to first token (first response body byte) and total time of each
// are recorded. Prints one line of results. Loopback only, for benchmarks.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
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
};

struct Results {
  std::vector<double> ttft_ms, total_ms;
  int errors = 0;
  int started = 0;
};

asio::awaitable<void> client(const Options& o, Results& res, Clock::time_point stop_at) {
  const std::string body = "{\"model\":\"" + o.model +
                           "\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"benchmark\"}]}";
  std::string request = "POST " + o.path + " HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n";
  for (const auto& h : o.headers) request += h + "\r\n";
  request += "content-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  beast::flat_buffer buffer;
  bool connected = false;
  std::array<char, 8192> sink;
  while (res.started < o.requests && Clock::now() < stop_at) {
    ++res.started;
    if (!connected) {
      stream.expires_after(std::chrono::seconds(5));
      auto [ec] = co_await stream.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), o.port), kTuple);
      if (ec) {
        ++res.errors;
        continue;
      }
      connected = true;
      buffer.clear();
    }
    const auto sent = Clock::now();
    stream.expires_after(std::chrono::seconds(60));
    auto [wec, wn] = co_await asio::async_write(stream, asio::buffer(request), kTuple);
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);
    auto [hec, hn] = wec ? std::tuple<boost::system::error_code, std::size_t>{wec, 0}
                         : co_await http::async_read_header(stream, buffer, parser, kTuple);
    if (hec) {
      ++res.errors;
      stream.close();
      connected = false;
      continue;
    }
    double ttft = -1;
    bool failed = parser.get().result_int() >= 400;
    while (!parser.is_done()) {
      parser.get().body().data = sink.data();
      parser.get().body().size = sink.size();
      auto [ec, n] = co_await http::async_read_some(stream, buffer, parser, kTuple);
      if (ec && ec != http::error::need_buffer) {
        failed = true;
        break;
      }
      if (ttft < 0 && parser.get().body().size < sink.size())
        ttft = std::chrono::duration<double, std::milli>(Clock::now() - sent).count();
    }
    if (failed) {
      ++res.errors;
      if (!parser.is_done() || !parser.keep_alive()) {
        stream.close();
        connected = false;
      }
      continue;
    }
    res.ttft_ms.push_back(ttft < 0 ? std::chrono::duration<double, std::milli>(Clock::now() - sent).count() : ttft);
    res.total_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - sent).count());
    if (!parser.keep_alive()) {
      stream.close();
      connected = false;
    }
  }
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
    else {
      std::fprintf(stderr,
                   "usage: infermesh-ttft-load --port N [--connections C] [--requests N] [--max-seconds S]\n"
                   "       [--model M] [--path P] [--header 'name: value']...\n");
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
  for (int c = 0; c < o.connections; ++c) asio::co_spawn(io, client(o, res, stop_at), asio::detached);
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
