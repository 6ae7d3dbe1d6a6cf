#pragma once

// Test-time signing keys and tokens for the authn tests: keys are generated
// when a test runs (nothing secret is committed), tokens are compact JWS.

#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct evp_pkey_st;

namespace infermesh::testing {

enum class KeyType { Rsa2048, EcP256, Ed25519 };

class SigningKey {
 public:
  static SigningKey generate(KeyType type);
  KeyType type() const { return type_; }
  // The JWS alg this key signs with: "RS256", "ES256", "EdDSA".
  const char* alg() const;
  // The public key as SubjectPublicKeyInfo PEM.
  std::string publicPem() const;
  evp_pkey_st* pkey() const { return key_.get(); }

 private:
  KeyType type_ = KeyType::Rsa2048;
  std::shared_ptr<evp_pkey_st> key_;
};

std::string base64Url(std::string_view bytes);

// Lowercase hex SHA-256, as Tenant.apiKeys[].sha256 wants it.
std::string sha256Hex(std::string_view bytes);

// header.payload.signature over the JSON texts exactly as given; ES256 as raw r||s.
std::string signJwt(const SigningKey& key, std::string_view header_json, std::string_view payload_json);
// The usual header ({"alg":...,"typ":"JWT","kid":...}; no kid when empty) and the payload given.
std::string makeJwt(const SigningKey& key, std::string_view kid, std::string_view payload_json);
// A JWK object with kty, crv, x, y / n, e, alg, use "sig" and kid.
std::string publicJwk(const SigningKey& key, std::string_view kid);
// {"keys":[...]}
std::string jwks(std::vector<std::string> jwk_objects);

// Forgeries.
// {"alg":"none"} (or the header given) with an empty signature.
std::string unsignedJwt(std::string_view payload_json, std::string_view header_json = R"({"alg":"none","typ":"JWT"})");
// HS256 with `secret` as the HMAC key: with an RSA public key's PEM as the
// secret this is the classic RS/HS key confusion.
std::string hs256Jwt(std::string_view secret, std::string_view header_json, std::string_view payload_json);
// The token with its payload replaced and the old signature kept.
std::string withPayload(std::string_view token, std::string_view payload_json);
// The token with one byte of its decoded signature flipped.
std::string withFlippedSignatureByte(std::string_view token, std::size_t index = 0);

}  // namespace infermesh::testing
