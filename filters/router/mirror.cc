#include "filters/router/mirror.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http.hpp>

#include <array>

#include "filters/router/upstream_connect.h"
#include "proxy/server/worker.h"
#include "proxy/upstream/load_balancer.h"

namespace infermesh::router {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr auto kMaxMirrorTime = std::chrono::minutes(5);

// Returns true when the model answered (any status below 500).
asio::awaitable<bool> mirrorOnce(proxy::Worker& worker, const config::Snapshot& snapshot,
                                 const config::ModelConfig& model, std::string head,
                                 const std::string& body, std::chrono::milliseconds idle) {
  std::vector<bool> tried(model.endpoints.size(), false);
  const upstream::PickRequest pick{tried, upstream::Clock::now()};
  const int picked = upstream::pickEndpoint(model, worker.endpointStates(), worker.roundRobinCounter(model.index),
                                            worker.rng(), pick);
  if (picked < 0) co_return false;
  const auto& ep = model.endpoints[static_cast<std::size_t>(picked)];
  auto conn = worker.upstreams().take(poolKey(snapshot, model, ep));
  if (!conn) {
    conn = std::make_unique<proxy::UpstreamConnection>(worker.io().get_executor());
    const ConnectResult c = co_await connectUpstream(worker, snapshot, model, ep, *conn, model.connect_timeout);
    if (!c.ok || c.alpn == "h2") co_return false;  // mirrors speak HTTP/1.1
  }
  const auto deadline = std::chrono::steady_clock::now() + kMaxMirrorTime;
  auto budget = [&] { return std::min<std::chrono::steady_clock::duration>(idle, deadline - std::chrono::steady_clock::now()); };
  head += ep.address;
  head += "\r\n\r\n";
  conn->stream.lower().expires_after(budget());
  const std::array<asio::const_buffer, 2> request{asio::buffer(head), asio::buffer(body)};
  auto [wec, wn] = co_await asio::async_write(conn->stream, request, kTuple);
  if (wec) co_return false;
  // Read and drop the response, streamed or not, through a small buffer.
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  std::array<char, 4096> sink;
  conn->stream.lower().expires_after(budget());
  auto [hec, hn] = co_await http::async_read_header(conn->stream, conn->buffer, parser, kTuple);
  if (hec) co_return false;
  while (!parser.is_done()) {
    parser.get().body().data = sink.data();
    parser.get().body().size = sink.size();
    conn->stream.lower().expires_after(budget());
    auto [ec, n] = co_await http::async_read_some(conn->stream, conn->buffer, parser, kTuple);
    if (ec && ec != http::error::need_buffer) co_return false;
  }
  const bool ok = parser.get().result_int() < 500;
  if (parser.keep_alive() && conn->buffer.size() == 0) {
    conn->stream.lower().expires_never();
    const auto keep_alive = parser.get()[http::field::keep_alive];
    worker.upstreams().put(poolKey(snapshot, model, ep), std::move(conn),
                           proxy::keepAliveFor(model.upstream_idle_timeout, {keep_alive.data(), keep_alive.size()}));
  }
  co_return ok;
}

}  // namespace

void spawnMirror(proxy::Worker& worker, std::shared_ptr<const config::Snapshot> snapshot,
                 const config::ModelConfig& model, std::string head, std::string body,
                 std::chrono::milliseconds idle_timeout) {
  auto& counts = worker.stats().mirrors[model.stats_id];
  if (worker.mirrorsInFlight() >= kMaxMirrorsInFlight) {
    ++counts[2];
    return;
  }
  ++worker.mirrorsInFlight();
  asio::co_spawn(
      worker.io(),
      [&worker, snapshot = std::move(snapshot), &model, head = std::move(head), body = std::move(body),
       idle_timeout]() mutable -> asio::awaitable<void> {
        const bool ok = co_await mirrorOnce(worker, *snapshot, model, std::move(head), body, idle_timeout);
        --worker.mirrorsInFlight();
        ++worker.stats().mirrors[model.stats_id][ok ? 0 : 1];
      },
      asio::detached);
}

}  // namespace infermesh::router
