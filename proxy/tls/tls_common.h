#pragma once

#include <string>
#include <vector>

#include "proxy/common/spiffe_id.h"

typedef struct x509_st X509;
typedef struct x509_store_ctx_st X509_STORE_CTX;

namespace infermesh::tls {

// The oldest queued OpenSSL error as text (clears the queue).
std::string opensslError();

// A certificate's identity from its URI SANs. An SVID carries exactly one
// URI SAN, a valid SPIFFE ID; anything else (two URI SANs, another scheme, a
// dot segment, a control character) is refused at the handshake with
// X509_V_ERR_UNSUPPORTED_NAME_SYNTAX. No URI SAN at all is no identity.
struct CertIdentity {
  std::string spiffe_id;  // set when valid
  std::string error;      // set when refused
};
CertIdentity spiffeIdOf(X509* cert);
// For verify callbacks, on the leaf: refuses a malformed identity and, with
// a non-empty allow list, one not on it (X509_V_ERR_APPLICATION_VERIFICATION).
// Returns the callback's answer.
int verifyLeafIdentity(X509_STORE_CTX* store, const std::vector<std::string>& allowed);

}  // namespace infermesh::tls
