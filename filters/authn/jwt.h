#pragma once

// JWS-signed JWTs (RFC 7515, 7519) and the JWK sets that verify them
// (RFC 7517, 7518, 8037), for the authn filter. Only asymmetric algorithms
// are accepted, and a key verifies only tokens of its own algorithm
// (docs/jwt.md). Nothing here throws; every input, however bad, ends in an
// error code.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// OpenSSL's EVP_PKEY, kept out of this header.
struct evp_pkey_st;

namespace infermesh::authn {

enum class JwtError { None, Malformed, AlgNotAllowed, UnknownKid, KeyMismatch, BadSignature, Expired, NotYetValid,
                      BadIssuer, BadAudience };
// "jwt_malformed", "jwt_alg_not_allowed", ...: a metric label and the reason
// in a 401 body ("" for None).
const char* reasonCode(JwtError e);

enum class JwtAlg : std::uint8_t { RS256, ES256, EdDSA };
// The JOSE name: "RS256", "ES256", "EdDSA".
const char* algName(JwtAlg alg);

// Tokens and key sets larger than these are refused before any parsing.
inline constexpr std::size_t kMaxTokenBytes = 16 * 1024;
inline constexpr std::size_t kMaxJwksBytes = 1024 * 1024;

struct PublicKeyDeleter {
  void operator()(evp_pkey_st* key) const;
};
using PublicKey = std::unique_ptr<evp_pkey_st, PublicKeyDeleter>;

// One verification key from a JWKS. `alg` is the JWK's "alg", or the one
// its kty/crv allows when "alg" is absent.
struct Jwk {
  std::string kid;  // empty when the JWK has none
  JwtAlg alg = JwtAlg::RS256;
  PublicKey key;
};

// A parsed JWKS. Keys of unsupported kty/crv/alg, with "use" other than
// "sig", "key_ops" without "verify", RSA moduli outside 2048..8192 bits, or
// otherwise malformed are skipped (counted, with a reason each), never fatal
// unless the document itself is not a JWKS ({"keys":[...]}).
class JwkSet {
 public:
  // Null and `error` set when the document is not a JWKS or over kMaxJwksBytes.
  static std::shared_ptr<const JwkSet> parse(std::string_view json, std::string& error);

  std::size_t size() const { return keys_.size(); }
  std::size_t skipped() const { return skip_reasons_.size(); }
  // "key 2 (kid \"a\"): kty \"oct\" is not supported", one per skipped key, for logs.
  const std::vector<std::string>& skipReasons() const { return skip_reasons_; }
  // The first key with this kid, or null.
  const Jwk* find(std::string_view kid) const;
  const std::vector<Jwk>& keys() const { return keys_; }

 private:
  std::vector<Jwk> keys_;
  std::vector<std::string> skip_reasons_;
};

// A token split and decoded but not yet verified: the caller reads `issuer`
// first to pick the issuer's keys.
struct JwtToken {
  JwtAlg alg = JwtAlg::RS256;
  std::string kid;  // empty: the header has no kid
  std::string issuer, subject;
  std::vector<std::string> audiences;  // "aud" as a string (one entry) or an array
  std::optional<std::int64_t> exp, nbf, iat;  // NumericDates; fractions round toward the stricter side
  // Top-level claims whose value is a string (one entry) or an array of
  // strings (one entry per element), for claim -> tenant mapping.
  std::vector<std::pair<std::string, std::string>> claims;
  // The first value of a claim, or empty.
  std::string_view claim(std::string_view name) const;

  // What verifyJwt checks: the encoded header and payload as signed, and the
  // decoded signature (for ES256 the JWS form, r||s).
  std::string signing_input;
  std::string signature;
};

// Splits and decodes a compact JWS. Malformed: over kMaxTokenBytes, not
// three parts, bad base64url, header or payload not a JSON object, a
// duplicate member name, a registered header or claim of the wrong type,
// "crit" present, "typ" other than JWT/at+jwt. AlgNotAllowed: "alg" other
// than RS256, ES256, EdDSA ("none" and HS* included).
JwtError parseJwt(std::string_view compact, JwtToken& out);

struct JwtRequirements {
  std::string issuer;                  // must equal iss; empty matches no token
  std::vector<std::string> audiences;  // the token must name one of them; empty: aud not checked
  std::chrono::seconds clock_skew{60};  // allowed on exp and nbf, clamped to 0..1 day
  // A token without exp is Expired: it has no lifetime left to trust.
  bool require_exp = true;
};

// Checks, in this order: issuer, key and signature, exp, nbf, audience.
// Key choice: by kid (no key with that kid -> UnknownKid); a token without
// kid tries every key of its alg. Keys with the token's kid but none of its
// alg -> KeyMismatch, which is what stops RS/HS and RS/ES confusion.
JwtError verifyJwt(const JwtToken& token, const JwkSet& keys, const JwtRequirements& req, std::int64_t now_unix);

// Strict base64url (RFC 7515 §2, appendix C): no padding, no whitespace,
// only the URL-safe alphabet, canonical trailing bits. False on any other input.
bool base64UrlDecode(std::string_view in, std::string& out);

}  // namespace infermesh::authn
