#include "tests/support/jwt_signer.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include <stdexcept>

namespace infermesh::testing {
namespace {

std::string bnBytes(const BIGNUM* bn, int width = 0) {
  std::string out(static_cast<std::size_t>(width > 0 ? width : BN_num_bytes(bn)), '\0');
  if (width > 0) BN_bn2binpad(bn, reinterpret_cast<unsigned char*>(out.data()), width);
  else BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

std::string bnParam(EVP_PKEY* key, const char* name, int width = 0) {
  BIGNUM* bn = nullptr;
  if (EVP_PKEY_get_bn_param(key, name, &bn) != 1) throw std::runtime_error(std::string("no key parameter ") + name);
  std::string out = bnBytes(bn, width);
  BN_free(bn);
  return out;
}

std::string base64UrlDecode(std::string_view in) {
  std::string b64(in);
  for (auto& c : b64) c = c == '-' ? '+' : c == '_' ? '/' : c;
  while (b64.size() % 4 != 0) b64 += '=';
  std::string out(b64.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(b64.data()), static_cast<int>(b64.size()));
  if (n < 0) throw std::runtime_error("bad base64url in a test token");
  // EVP_DecodeBlock counts the bytes the added padding stands for.
  out.resize(static_cast<std::size_t>(n) - (b64.size() - in.size()));
  return out;
}

std::vector<std::string_view> parts(std::string_view token) {
  const auto a = token.find('.');
  const auto b = token.find('.', a + 1);
  if (a == std::string_view::npos || b == std::string_view::npos) throw std::runtime_error("not a compact JWS");
  return {token.substr(0, a), token.substr(a + 1, b - a - 1), token.substr(b + 1)};
}

}  // namespace

SigningKey SigningKey::generate(KeyType type) {
  SigningKey k;
  k.type_ = type;
  EVP_PKEY* raw = type == KeyType::Rsa2048 ? EVP_RSA_gen(2048)
                  : type == KeyType::EcP256 ? EVP_EC_gen("P-256")
                                            : EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (raw == nullptr) throw std::runtime_error("key generation failed");
  k.key_.reset(raw, EVP_PKEY_free);
  return k;
}

const char* SigningKey::alg() const {
  switch (type_) {
    case KeyType::Rsa2048: return "RS256";
    case KeyType::EcP256: return "ES256";
    case KeyType::Ed25519: return "EdDSA";
  }
  return "";
}

std::string SigningKey::publicPem() const {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, key_.get());
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return out;
}

std::string sha256Hex(std::string_view bytes) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(bytes.data(), bytes.size(), out, &n, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < n; ++i) {
    hex += kHex[out[i] >> 4];
    hex += kHex[out[i] & 15];
  }
  return hex;
}

std::string base64Url(std::string_view bytes) {
  std::string b64(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  b64.resize(static_cast<std::size_t>(n));
  while (!b64.empty() && b64.back() == '=') b64.pop_back();
  for (auto& c : b64) c = c == '+' ? '-' : c == '/' ? '_' : c;
  return b64;
}

std::string signJwt(const SigningKey& key, std::string_view header_json, std::string_view payload_json) {
  const std::string input = base64Url(header_json) + "." + base64Url(payload_json);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  const EVP_MD* md = key.type() == KeyType::Ed25519 ? nullptr : EVP_sha256();
  std::size_t len = 0;
  std::string sig;
  if (EVP_DigestSignInit(ctx, nullptr, md, nullptr, key.pkey()) != 1 ||
      EVP_DigestSign(ctx, nullptr, &len, reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
    throw std::runtime_error("signing failed");
  sig.resize(len);
  if (EVP_DigestSign(ctx, reinterpret_cast<unsigned char*>(sig.data()), &len,
                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1)
    throw std::runtime_error("signing failed");
  sig.resize(len);
  EVP_MD_CTX_free(ctx);
  if (key.type() == KeyType::EcP256) {
    const auto* p = reinterpret_cast<const unsigned char*>(sig.data());
    ECDSA_SIG* es = d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(sig.size()));
    if (es == nullptr) throw std::runtime_error("bad ECDSA signature");
    sig = bnBytes(ECDSA_SIG_get0_r(es), 32) + bnBytes(ECDSA_SIG_get0_s(es), 32);
    ECDSA_SIG_free(es);
  }
  return input + "." + base64Url(sig);
}

std::string makeJwt(const SigningKey& key, std::string_view kid, std::string_view payload_json) {
  std::string header = std::string(R"({"alg":")") + key.alg() + R"(","typ":"JWT")";
  if (!kid.empty()) header += R"(,"kid":")" + std::string(kid) + "\"";
  header += "}";
  return signJwt(key, header, payload_json);
}

std::string publicJwk(const SigningKey& key, std::string_view kid) {
  std::string body;
  EVP_PKEY* k = key.pkey();
  switch (key.type()) {
    case KeyType::Rsa2048:
      body = R"("kty":"RSA","n":")" + base64Url(bnParam(k, OSSL_PKEY_PARAM_RSA_N)) + R"(","e":")" +
             base64Url(bnParam(k, OSSL_PKEY_PARAM_RSA_E)) + "\"";
      break;
    case KeyType::EcP256:
      body = R"("kty":"EC","crv":"P-256","x":")" + base64Url(bnParam(k, OSSL_PKEY_PARAM_EC_PUB_X, 32)) +
             R"(","y":")" + base64Url(bnParam(k, OSSL_PKEY_PARAM_EC_PUB_Y, 32)) + "\"";
      break;
    case KeyType::Ed25519: {
      std::string raw(32, '\0');
      std::size_t len = raw.size();
      EVP_PKEY_get_raw_public_key(k, reinterpret_cast<unsigned char*>(raw.data()), &len);
      body = R"("kty":"OKP","crv":"Ed25519","x":")" + base64Url(raw) + "\"";
      break;
    }
  }
  return "{" + body + R"(,"alg":")" + key.alg() + R"(","use":"sig","kid":")" + std::string(kid) + "\"}";
}

std::string jwks(std::vector<std::string> jwk_objects) {
  std::string out = R"({"keys":[)";
  for (std::size_t i = 0; i < jwk_objects.size(); ++i) out += (i ? "," : "") + jwk_objects[i];
  return out + "]}";
}

std::string unsignedJwt(std::string_view payload_json, std::string_view header_json) {
  return base64Url(header_json) + "." + base64Url(payload_json) + ".";
}

std::string hs256Jwt(std::string_view secret, std::string_view header_json, std::string_view payload_json) {
  const std::string input = base64Url(header_json) + "." + base64Url(payload_json);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
  return input + "." + base64Url(std::string_view(reinterpret_cast<const char*>(mac), len));
}

std::string withPayload(std::string_view token, std::string_view payload_json) {
  const auto p = parts(token);
  return std::string(p[0]) + "." + base64Url(payload_json) + "." + std::string(p[2]);
}

std::string withFlippedSignatureByte(std::string_view token, std::size_t index) {
  const auto p = parts(token);
  std::string sig = base64UrlDecode(p[2]);
  if (index >= sig.size()) throw std::runtime_error("signature shorter than the index");
  sig[index] = static_cast<char>(sig[index] ^ 0x01);
  return std::string(p[0]) + "." + std::string(p[1]) + "." + base64Url(sig);
}

}  // namespace infermesh::testing
