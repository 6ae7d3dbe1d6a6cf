#include "tests/support/test_certs.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <stdexcept>

namespace infermesh::testing {
namespace {

EVP_PKEY* newKey(bool rsa = false) { return rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256"); }

void writePem(const std::string& path, X509* cert) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr || PEM_write_X509(f, cert) != 1) throw std::runtime_error("cannot write " + path);
  std::fclose(f);
}

void writePem(const std::string& path, EVP_PKEY* key) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr || PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    throw std::runtime_error("cannot write " + path);
  std::fclose(f);
}

X509* readCert(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) throw std::runtime_error("cannot read " + path);
  X509* c = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  return c;
}

EVP_PKEY* readKey(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) throw std::runtime_error("cannot read " + path);
  EVP_PKEY* k = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  return k;
}

void addExt(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) throw std::runtime_error("bad extension " + value);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

X509* newCert(EVP_PKEY* key, const std::string& cn, long from_days, long until_days) {
  static long serial = 1000;
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), ++serial);
  X509_gmtime_adj(X509_getm_notBefore(cert), from_days * 86400);
  X509_gmtime_adj(X509_getm_notAfter(cert), until_days * 86400);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  return cert;
}

}  // namespace

void makeCa(const std::string& dir, const std::string& name) {
  EVP_PKEY* key = newKey();
  X509* cert = newCert(key, name, -1, 365);
  X509_set_issuer_name(cert, X509_get_subject_name(cert));
  addExt(cert, cert, NID_basic_constraints, "critical,CA:TRUE");
  addExt(cert, cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  addExt(cert, cert, NID_subject_key_identifier, "hash");
  X509_sign(cert, key, EVP_sha256());
  writePem(dir + "/" + name + ".crt", cert);
  writePem(dir + "/" + name + ".key", key);
  X509_free(cert);
  EVP_PKEY_free(key);
}

void makeCert(const std::string& dir, const std::string& ca, const CertSpec& spec) {
  X509* ca_cert = readCert(dir + "/" + ca + ".crt");
  EVP_PKEY* ca_key = readKey(dir + "/" + ca + ".key");
  EVP_PKEY* key = newKey(spec.rsa);
  X509* cert = newCert(key, spec.common_name, spec.valid_from_days, spec.valid_until_days);
  X509_set_issuer_name(cert, X509_get_subject_name(ca_cert));
  // Built entry by entry rather than from a config string, so that a test
  // can put any bytes (commas, CRLF) into a URI SAN.
  GENERAL_NAMES* names = sk_GENERAL_NAME_new_null();
  auto add = [&](int type, const std::string& value) {
    GENERAL_NAME* n = GENERAL_NAME_new();
    if (type == GEN_IPADD) {
      GENERAL_NAME_set0_value(n, type, a2i_IPADDRESS(value.c_str()));
    } else {
      ASN1_IA5STRING* text = ASN1_IA5STRING_new();
      ASN1_STRING_set(text, value.data(), static_cast<int>(value.size()));
      GENERAL_NAME_set0_value(n, type, text);
    }
    sk_GENERAL_NAME_push(names, n);
  };
  for (const auto& d : spec.dns) add(GEN_DNS, d);
  for (const auto& ip : spec.ips) add(GEN_IPADD, ip);
  for (const auto& uri : spec.uris) add(GEN_URI, uri);
  if (sk_GENERAL_NAME_num(names) > 0) X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT);
  GENERAL_NAMES_free(names);
  addExt(cert, ca_cert, NID_basic_constraints, "critical,CA:FALSE");
  addExt(cert, ca_cert, NID_ext_key_usage, "serverAuth,clientAuth");
  addExt(cert, ca_cert, NID_authority_key_identifier, "keyid");
  X509_sign(cert, ca_key, EVP_sha256());
  writePem(dir + "/" + spec.name + ".crt", cert);
  writePem(dir + "/" + spec.name + ".key", key);
  X509_free(cert);
  EVP_PKEY_free(key);
  X509_free(ca_cert);
  EVP_PKEY_free(ca_key);
}

}  // namespace infermesh::testing
