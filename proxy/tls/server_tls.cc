#include "proxy/tls/server_tls.h"
#include "proxy/tls/tls_common.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>

namespace infermesh::tls {
std::string opensslError() {
  unsigned long e = ERR_get_error();
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return e ? buf : "unknown error";
}

namespace {

int contextsIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

bool nameMatches(const std::string& pattern, std::string_view host) {
  if (pattern.starts_with("*.")) {
    const auto dot = host.find('.');
    return dot != std::string_view::npos && host.substr(dot) == std::string_view(pattern).substr(1);
  }
  return host.size() == pattern.size() &&
         std::equal(host.begin(), host.end(), pattern.begin(),
                    [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; });
}

}  // namespace

CertIdentity spiffeIdOf(X509* cert) {
  CertIdentity out;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  int uris = 0;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != GEN_URI || ++uris > 1) continue;
    const auto* uri = n->d.uniformResourceIdentifier;
    out.spiffe_id.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                         static_cast<std::size_t>(ASN1_STRING_length(uri)));
  }
  GENERAL_NAMES_free(names);
  if (uris > 1) out.error = "more than one URI SAN";
  else if (uris == 1) out.error = common::spiffeIdError(out.spiffe_id);
  if (!out.error.empty()) out.spiffe_id.clear();
  return out;
}

// The verify callbacks' shared last step for the leaf: a malformed identity
// is refused whatever the allow list; with a list, the ID must be on it.
int verifyLeafIdentity(X509_STORE_CTX* store, const std::vector<std::string>& allowed) {
  const CertIdentity who = spiffeIdOf(X509_STORE_CTX_get_current_cert(store));
  if (!who.error.empty()) {
    X509_STORE_CTX_set_error(store, X509_V_ERR_UNSUPPORTED_NAME_SYNTAX);
    return 0;
  }
  if (allowed.empty() || (!who.spiffe_id.empty() && common::spiffeIdAllowed(who.spiffe_id, allowed))) return 1;
  X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
  return 0;
}

struct Callbacks {
  static const ServerContexts* owner(SSL* ssl) {
    return static_cast<const ServerContexts*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), contextsIndex()));
  }

  // SNI: switch to the context whose names match; else keep the default.
  static int serverName(SSL* ssl, int*, void* arg) {
    const auto* self = static_cast<const ServerContexts*>(arg);
    const char* host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (host == nullptr) return SSL_TLSEXT_ERR_OK;
    for (std::size_t i = 1; i < self->contexts_.size(); ++i)
      for (const auto& pattern : self->contexts_[i].names)
        if (nameMatches(pattern, host)) {
          SSL_set_SSL_CTX(ssl, self->contexts_[i].ctx);
          // Verification settings live on the SSL too; keep the default's.
          return SSL_TLSEXT_ERR_OK;
        }
    return SSL_TLSEXT_ERR_OK;
  }

  static int alpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                  unsigned int inlen, void* arg) {
    const auto* self = static_cast<const ServerContexts*>(arg);
    unsigned char* selected = nullptr;
    if (SSL_select_next_proto(&selected, outlen, self->alpn_wire_.data(),
                              static_cast<unsigned>(self->alpn_wire_.size()), in, inlen) != OPENSSL_NPN_NEGOTIATED)
      return SSL_TLSEXT_ERR_NOACK;  // no overlap: go on without ALPN (HTTP/1.1)
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }

  // After the chain checks: the leaf's identity must be well formed and,
  // with an allow list, allowed.
  static int verify(int preverify_ok, X509_STORE_CTX* store) {
    if (!preverify_ok || X509_STORE_CTX_get_error_depth(store) != 0) return preverify_ok;
    auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    const ServerContexts* self = owner(ssl);
    if (self == nullptr) return 1;
    return verifyLeafIdentity(store, self->allowed_spiffe_ids_);
  }
};

std::shared_ptr<const ServerContexts> ServerContexts::build(const config::ListenerTlsConfig& config,
                                                            std::vector<std::string> alpn, std::string& error) {
  std::shared_ptr<ServerContexts> self(new ServerContexts);
  self->allowed_spiffe_ids_ = config.allowed_spiffe_ids;
  for (const auto& p : alpn) {
    self->alpn_wire_.push_back(static_cast<unsigned char>(p.size()));
    self->alpn_wire_.insert(self->alpn_wire_.end(), p.begin(), p.end());
  }
  for (const auto& cert : config.certificates) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
    self->contexts_.push_back(Entry{ctx, cert.server_names});
    if (ctx == nullptr) {
      error = "cannot create a TLS context: " + opensslError();
      return nullptr;
    }
    SSL_CTX_set_ex_data(ctx, contextsIndex(), self.get());
    SSL_CTX_set_min_proto_version(ctx, config.tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    const std::string& suites = config.cipher_suites;
    if (SSL_CTX_set_cipher_list(ctx, suites.empty() ? config::kDefaultCipherSuites : suites.c_str()) != 1) {
      error = "tls.cipherSuites: no usable TLS 1.2 cipher suite in \"" + suites + "\": " + opensslError();
      return nullptr;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert.cert_file.c_str()) != 1) {
      error = cert.cert_file + ": cannot load the certificate chain: " + opensslError();
      return nullptr;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cert.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      error = cert.key_file + ": cannot load the private key: " + opensslError();
      return nullptr;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
      error = cert.key_file + ": the key does not match " + cert.cert_file;
      return nullptr;
    }
    if (!config.client_ca_file.empty()) {
      if (SSL_CTX_load_verify_locations(ctx, config.client_ca_file.c_str(), nullptr) != 1) {
        error = config.client_ca_file + ": cannot load the client CA bundle: " + opensslError();
        return nullptr;
      }
      SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, &Callbacks::verify);
    }
    // Session resumption across connections of this listener.
    static const unsigned char kSessionContext[] = "infermesh";
    SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
    if (!self->alpn_wire_.empty()) SSL_CTX_set_alpn_select_cb(ctx, &Callbacks::alpn, self.get());
  }
  if (self->contexts_.empty()) {
    error = "no certificate";
    return nullptr;
  }
  if (self->contexts_.size() > 1) {
    SSL_CTX_set_tlsext_servername_callback(self->contexts_.front().ctx, &Callbacks::serverName);
    SSL_CTX_set_tlsext_servername_arg(self->contexts_.front().ctx, self.get());
  }
  return self;
}

ServerContexts::~ServerContexts() {
  for (auto& e : contexts_) SSL_CTX_free(e.ctx);
}

std::string negotiatedProtocol(SSL* ssl) {
  const unsigned char* data = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl, &data, &len);
  return std::string(reinterpret_cast<const char*>(data), len);
}

std::string peerSpiffeId(SSL* ssl) {
  X509* cert = SSL_get1_peer_certificate(ssl);
  if (cert == nullptr) return {};
  std::string id = spiffeIdOf(cert).spiffe_id;
  X509_free(cert);
  return id;
}

HandshakeResult classifyFailure(SSL* ssl, unsigned long error) {
  if (ERR_GET_REASON(error) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) return HandshakeResult::NoCertificate;
  switch (SSL_get_verify_result(ssl)) {
    case X509_V_OK:
      return HandshakeResult::Error;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
      return HandshakeResult::Expired;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
      return HandshakeResult::UnknownCa;
    case X509_V_ERR_APPLICATION_VERIFICATION:
      return HandshakeResult::SpiffeIdNotAllowed;
    case X509_V_ERR_UNSUPPORTED_NAME_SYNTAX:
      return HandshakeResult::InvalidSpiffeId;
    default:
      return HandshakeResult::BadCertificate;
  }
}

ListenerTls::ListenerTls(std::size_t listeners) {
  for (std::size_t i = 0; i < listeners; ++i) slots_.push_back(std::make_unique<Slot>());
}

std::vector<ListenerTls::FileStamp> ListenerTls::stamp(const config::ListenerTlsConfig& c) {
  std::vector<FileStamp> out;
  auto add = [&](const std::string& path) {
    FileStamp f{path};
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
      f.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
      f.size = st.st_size;
      f.inode = st.st_ino;
    }
    out.push_back(std::move(f));
  };
  for (const auto& cert : c.certificates) {
    add(cert.cert_file);
    add(cert.key_file);
  }
  if (!c.client_ca_file.empty()) add(c.client_ca_file);
  return out;
}

bool ListenerTls::apply(const config::Snapshot& snapshot, std::string& error) {
  std::vector<std::shared_ptr<const ServerContexts>> built(slots_.size());
  std::vector<std::vector<std::string>> alpns(slots_.size());
  for (const auto& l : snapshot.listeners) {
    if (l.index >= slots_.size()) continue;
    auto& slot = *slots_[l.index];
    if (!l.tls.enabled()) continue;
    std::vector<std::string> alpn;
    if (l.protocol != config::ListenerProtocol::Http1) alpn.push_back("h2");
    if (l.protocol != config::ListenerProtocol::Http2) alpn.push_back("http/1.1");
    alpns[l.index] = alpn;
    if (slot.current.load() && slot.config == l.tls && slot.alpn == alpn) continue;  // unchanged
    std::string why;
    built[l.index] = ServerContexts::build(l.tls, alpn, why);
    if (!built[l.index]) {
      error = "Listener/" + l.name + ": spec.tls: " + why;
      return false;
    }
  }
  // Every listener loaded: switch them all.
  for (const auto& l : snapshot.listeners) {
    if (l.index >= slots_.size()) continue;
    auto& slot = *slots_[l.index];
    slot.name = l.name;
    if (!l.tls.enabled()) {
      slot.current.store(nullptr);
      slot.config = {};
      slot.stamps.clear();
      continue;
    }
    if (built[l.index]) {
      slot.current.store(built[l.index]);
      slot.config = l.tls;
      slot.alpn = alpns[l.index];
      slot.stamps = stamp(l.tls);
    }
  }
  return true;
}

int ListenerTls::poll() {
  int reloaded = 0;
  for (auto& slot_ptr : slots_) {
    auto& slot = *slot_ptr;
    if (!slot.config.enabled()) continue;
    auto now = stamp(slot.config);
    if (now == slot.stamps) continue;
    std::string why;
    auto fresh = ServerContexts::build(slot.config, slot.alpn, why);
    slot.stamps = std::move(now);  // do not retry the same broken files every second
    if (!fresh) {
      ++reloads_failed;
      spdlog::error("Listener/{}: certificate files changed but cannot be loaded, keeping the old ones: {}", slot.name,
                    why);
      continue;
    }
    slot.current.store(std::move(fresh));
    ++reloads_ok;
    ++reloaded;
    spdlog::info("Listener/{}: reloaded TLS certificates", slot.name);
  }
  return reloaded;
}

std::shared_ptr<const ServerContexts> ListenerTls::contexts(std::uint32_t listener) const {
  return listener < slots_.size() ? slots_[listener]->current.load() : nullptr;
}

}  // namespace infermesh::tls
