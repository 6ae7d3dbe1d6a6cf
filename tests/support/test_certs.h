#pragma once

#include <string>
#include <vector>

namespace infermesh::testing {

// Test PKI made at test time with OpenSSL (nothing secret is committed):
// PEM files written into a directory.
struct CertSpec {
  std::string name;              // files: <name>.crt, <name>.key
  std::string common_name;
  std::vector<std::string> dns;  // subjectAltName DNS entries
  std::vector<std::string> ips;  // subjectAltName IP entries
  std::vector<std::string> uris; // subjectAltName URIs (SPIFFE IDs)
  long valid_from_days = -1;     // relative to now
  long valid_until_days = 30;
  bool rsa = false;              // an RSA-2048 key instead of EC P-256
};

// A self-signed CA: <name>.crt and <name>.key.
void makeCa(const std::string& dir, const std::string& name);
// A leaf signed by the CA <ca>.
void makeCert(const std::string& dir, const std::string& ca, const CertSpec& spec);

}  // namespace infermesh::testing
