#include "filters/router/upstream_connect.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <openssl/ssl.h>

#include "proxy/server/upstream_pool.h"
#include "proxy/server/worker.h"
#include "proxy/tls/client_tls.h"
#include "proxy/tls/server_tls.h"

namespace infermesh::router {

namespace asio = boost::asio;
constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

std::uint64_t poolKey(const config::Snapshot& snapshot, const config::ModelConfig& model,
                      const config::EndpointConfig& endpoint) {
  // A TLS connection carries the identity its context proved and
  // presented: it is only reused under the same context.
  const auto* tls = snapshot.upstreamTls(model.index);
  if (tls == nullptr) return endpoint.key;
  std::uint64_t k = endpoint.key ^ (reinterpret_cast<std::uintptr_t>(tls) * 0x9e3779b97f4a7c15ULL);
  return k ^ (k >> 29);
}

asio::awaitable<ConnectResult> connectUpstream(proxy::Worker& worker, const config::Snapshot& snapshot,
                                               const config::ModelConfig& model, const config::EndpointConfig& ep,
                                               proxy::UpstreamConnection& conn,
                                               std::chrono::steady_clock::duration timeout) {
  ConnectResult result;
  auto& tcp = conn.stream.lower();
  boost::system::error_code ec;
  const asio::ip::tcp::endpoint endpoint(asio::ip::make_address(ep.ip, ec), ep.port);
  tcp.expires_after(timeout);
  auto [cec] = co_await tcp.async_connect(endpoint, kTuple);
  if (cec) {
    result.error = cec.message();
    co_return result;
  }
  tcp.socket().set_option(asio::ip::tcp::no_delay(true), ec);
  const tls::ClientContext* tls = snapshot.upstreamTls(model.index);
  if (tls == nullptr) {
    result.ok = true;
    co_return result;
  }
  SSL* ssl = tls->newSsl(ep);
  if (ssl == nullptr) {
    result.error = "cannot create a TLS session";
    co_return result;
  }
  conn.stream.startTls(ssl);
  auto [hec] = co_await conn.stream.tlsStream()->async_handshake(asio::ssl::stream_base::client, kTuple);
  auto& counts = worker.stats().upstream_tls;
  if (hec) {
    ++counts[2];
    const long verify = SSL_get_verify_result(ssl);
    result.error = "TLS handshake with " + ep.address + " failed: " +
                   (verify != X509_V_OK ? std::string(X509_verify_cert_error_string(verify)) : hec.message());
    co_return result;
  }
  ++counts[SSL_session_reused(ssl) ? 1 : 0];
  result.alpn = tls::negotiatedProtocol(ssl);
  result.ok = true;
  co_return result;
}

}  // namespace infermesh::router
