#pragma once

#include <string>
#include <vector>

typedef struct x509_st X509;

namespace infermesh::tls {

// The oldest queued OpenSSL error as text (clears the queue).
std::string opensslError();

// The certificate's SPIFFE ID (its first spiffe:// URI SAN), or "".
std::string spiffeIdOf(X509* cert);
// Whether `id` is listed; entries ending in "/" match as prefixes.
bool spiffeIdAllowed(const std::string& id, const std::vector<std::string>& allowed);

}  // namespace infermesh::tls
