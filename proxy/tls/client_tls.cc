#include "proxy/tls/client_tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "proxy/tls/tls_common.h"

namespace infermesh::tls {
namespace {

int contextIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}
int endpointIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

bool isIp(const std::string& host) {
  unsigned char buf[16];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

struct ClientContext::Callbacks {
  static const ClientContext* owner(SSL* ssl) {
    return static_cast<const ClientContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), contextIndex()));
  }

  // A session (ticket) to resume with next time; replaces the endpoint's
  // previous one. Returning 1 keeps the reference.
  static int newSession(SSL* ssl, SSL_SESSION* session) {
    const ClientContext* self = owner(ssl);
    // The endpoint key rides on the SSL as the pointer value itself.
    const auto key = reinterpret_cast<std::uintptr_t>(SSL_get_ex_data(ssl, endpointIndex()));
    if (self == nullptr || key == 0) return 0;
    std::lock_guard lock(self->mu_);
    auto& slot = self->sessions_[key];
    if (slot != nullptr) SSL_SESSION_free(slot);
    slot = session;
    return 1;
  }

  // After the chain checks: the server's SPIFFE ID, when required.
  static int verify(int preverify_ok, X509_STORE_CTX* store) {
    if (!preverify_ok || X509_STORE_CTX_get_error_depth(store) != 0) return preverify_ok;
    auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    const ClientContext* self = owner(ssl);
    if (self == nullptr || self->spiffe_ids_.empty()) return 1;
    return verifyLeafIdentity(store, self->spiffe_ids_);
  }
};

std::shared_ptr<const ClientContext> ClientContext::build(const config::UpstreamTlsConfig& config,
                                                          std::vector<std::string> alpn, std::string& error) {
  std::shared_ptr<ClientContext> self(new ClientContext);
  self->server_name_ = config.server_name;
  self->spiffe_ids_ = config.spiffe_ids;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  self->ctx_ = ctx;
  if (ctx == nullptr) {
    error = "cannot create a TLS context: " + opensslError();
    return nullptr;
  }
  SSL_CTX_set_ex_data(ctx, contextIndex(), self.get());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_cipher_list(ctx, config::kDefaultCipherSuites);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_load_verify_locations(ctx, config.ca_file.c_str(), nullptr) != 1) {
    error = config.ca_file + ": cannot load the CA bundle: " + opensslError();
    return nullptr;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, &Callbacks::verify);
  if (!config.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx, config.cert_file.c_str()) != 1) {
      error = config.cert_file + ": cannot load the client certificate: " + opensslError();
      return nullptr;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, config.key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      error = config.key_file + ": cannot load the client key (or it does not match): " + opensslError();
      return nullptr;
    }
  }
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx, &Callbacks::newSession);
  for (const auto& p : alpn) {
    self->alpn_wire_.push_back(static_cast<unsigned char>(p.size()));
    self->alpn_wire_.insert(self->alpn_wire_.end(), p.begin(), p.end());
  }
  if (!self->alpn_wire_.empty())
    SSL_CTX_set_alpn_protos(ctx, self->alpn_wire_.data(), static_cast<unsigned>(self->alpn_wire_.size()));
  return self;
}

ClientContext::~ClientContext() {
  for (auto& [key, s] : sessions_) SSL_SESSION_free(s);
  SSL_CTX_free(ctx_);
}

SSL* ClientContext::newSsl(const config::EndpointConfig& endpoint) const {
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr) return nullptr;
  SSL_set_ex_data(ssl, endpointIndex(), reinterpret_cast<void*>(static_cast<std::uintptr_t>(endpoint.key)));
  const std::string& name = server_name_.empty() ? endpoint.host : server_name_;
  if (!isIp(name)) {
    SSL_set_tlsext_host_name(ssl, name.c_str());
    if (spiffe_ids_.empty() || !server_name_.empty()) SSL_set1_host(ssl, name.c_str());
  } else if (spiffe_ids_.empty()) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str());
  }
  std::lock_guard lock(mu_);
  if (auto it = sessions_.find(endpoint.key); it != sessions_.end()) SSL_set_session(ssl, it->second);
  return ssl;
}

bool UpstreamTlsRegistry::apply(const config::Snapshot& snapshot, std::string& error) {
  std::vector<std::shared_ptr<const ClientContext>> attached(snapshot.models.size());
  std::map<std::string, std::shared_ptr<const ClientContext>> next;
  for (const auto& m : snapshot.models) {
    if (!m.upstream_tls.enabled()) continue;
    std::vector<std::string> alpn;
    if (m.upstream_auto || m.upstream_h2) alpn.push_back("h2");
    if (!m.upstream_h2) alpn.push_back("http/1.1");
    const auto& t = m.upstream_tls;
    std::string key = t.ca_file + '\n' + t.server_name + '\n' + t.cert_file + '\n' + t.key_file + '\n';
    for (const auto& id : t.spiffe_ids) key += id + ' ';
    for (const auto& p : alpn) key += '\n' + p;
    auto& ctx = next[key];
    if (!ctx) {
      if (auto it = by_settings_.find(key); it != by_settings_.end()) ctx = it->second;
      else ctx = ClientContext::build(t, alpn, error);
    }
    if (!ctx) {
      error = "Model/" + m.name + ": spec.upstreamTls: " + error;
      return false;
    }
    attached[m.index] = ctx;
  }
  by_settings_ = std::move(next);
  snapshot.upstream_tls = std::move(attached);
  return true;
}

}  // namespace infermesh::tls
