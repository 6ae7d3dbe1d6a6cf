#include "filters/authn/jwt.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <simdjson.h>

#include <algorithm>
#include <cmath>

namespace infermesh::authn {

void PublicKeyDeleter::operator()(evp_pkey_st* key) const { EVP_PKEY_free(key); }

const char* reasonCode(JwtError e) {
  switch (e) {
    case JwtError::None: return "";
    case JwtError::Malformed: return "jwt_malformed";
    case JwtError::AlgNotAllowed: return "jwt_alg_not_allowed";
    case JwtError::UnknownKid: return "jwt_unknown_kid";
    case JwtError::KeyMismatch: return "jwt_key_mismatch";
    case JwtError::BadSignature: return "jwt_bad_signature";
    case JwtError::Expired: return "jwt_expired";
    case JwtError::NotYetValid: return "jwt_not_yet_valid";
    case JwtError::BadIssuer: return "jwt_bad_issuer";
    case JwtError::BadAudience: return "jwt_bad_audience";
  }
  return "jwt_malformed";
}

const char* algName(JwtAlg alg) {
  switch (alg) {
    case JwtAlg::RS256: return "RS256";
    case JwtAlg::ES256: return "ES256";
    case JwtAlg::EdDSA: return "EdDSA";
  }
  return "?";
}

// Written here rather than taken from OpenSSL: EVP_DecodeBlock is standard
// base64 with padding and tolerates whitespace, and JWS must refuse both.
bool base64UrlDecode(std::string_view in, std::string& out) {
  out.clear();
  if (in.size() % 4 == 1) return false;
  out.reserve(in.size() / 4 * 3 + 2);
  std::uint32_t acc = 0;
  int bits = 0;
  for (const char c : in) {
    std::uint32_t v;
    if (c >= 'A' && c <= 'Z') v = static_cast<std::uint32_t>(c - 'A');
    else if (c >= 'a' && c <= 'z') v = static_cast<std::uint32_t>(c - 'a' + 26);
    else if (c >= '0' && c <= '9') v = static_cast<std::uint32_t>(c - '0' + 52);
    else if (c == '-') v = 62;
    else if (c == '_') v = 63;
    else return false;
    acc = ((acc << 6) | v) & 0xffffu;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xffu));
    }
  }
  // Non-zero unused bits would give one byte string several encodings.
  return bits == 0 || (acc & ((1u << bits) - 1)) == 0;
}

namespace {

namespace dom = simdjson::dom;

bool hasDuplicateMembers(dom::object obj) {
  thread_local std::vector<std::string_view> names;
  names.clear();
  for (auto field : obj) names.push_back(field.key);
  std::sort(names.begin(), names.end());
  return std::adjacent_find(names.begin(), names.end()) != names.end();
}

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

// Far beyond any real date, and small enough that adding a skew cannot overflow.
constexpr std::int64_t kMaxDate = std::int64_t{1} << 40;

// RFC 7519 NumericDate: seconds, possibly with a fraction, which rounds
// toward the stricter answer (exp down, nbf up).
bool numericDate(dom::element v, bool round_up, std::int64_t& out) {
  std::int64_t i;
  double d;
  if (v.type() == dom::element_type::INT64 && !v.get_int64().get(i)) {
    out = i;
  } else if (v.type() == dom::element_type::DOUBLE && !v.get_double().get(d) && std::isfinite(d) &&
             std::fabs(d) <= static_cast<double>(kMaxDate)) {
    out = static_cast<std::int64_t>(round_up ? std::ceil(d) : std::floor(d));
  } else {
    return false;
  }
  return out >= -kMaxDate && out <= kMaxDate;
}

JwtError parseHeader(dom::element doc, JwtToken& out) {
  dom::object header;
  if (doc.get(header) || hasDuplicateMembers(header)) return JwtError::Malformed;
  std::string_view alg;
  dom::element v;
  if (header["alg"].get(v) || v.get(alg)) return JwtError::Malformed;
  if (alg == "RS256") out.alg = JwtAlg::RS256;
  else if (alg == "ES256") out.alg = JwtAlg::ES256;
  else if (alg == "EdDSA") out.alg = JwtAlg::EdDSA;
  else return JwtError::AlgNotAllowed;
  // An extension the verifier must understand; none is implemented.
  if (!header["crit"].get(v)) return JwtError::Malformed;
  std::string_view text;
  if (!header["typ"].get(v)) {
    // Plain JWTs and RFC 9068 access tokens; other types (logout, DPoP, SET)
    // are signed JWTs with other meanings.
    if (v.get(text)) return JwtError::Malformed;
    if (text.size() > 12 && equalsIgnoreCase(text.substr(0, 12), "application/")) text.remove_prefix(12);
    if (!equalsIgnoreCase(text, "JWT") && !equalsIgnoreCase(text, "at+jwt")) return JwtError::Malformed;
  }
  if (!header["kid"].get(v)) {
    if (v.get(text) || text.empty()) return JwtError::Malformed;
    out.kid = std::string(text);
  }
  return JwtError::None;
}

// Appends the string, or every element of an array of strings; false for
// anything else.
bool stringValues(dom::element v, std::vector<std::string>& out) {
  std::string_view s;
  if (!v.get(s)) {
    out.emplace_back(s);
    return true;
  }
  dom::array list;
  if (v.get(list)) return false;
  const auto start = out.size();
  for (auto item : list) {
    if (item.get(s)) {
      out.resize(start);
      return false;
    }
    out.emplace_back(s);
  }
  return true;
}

JwtError parsePayload(dom::element doc, JwtToken& out) {
  dom::object claims;
  if (doc.get(claims) || hasDuplicateMembers(claims)) return JwtError::Malformed;
  std::vector<std::string> values;
  for (auto [name, value] : claims) {
    std::int64_t date;
    if (name == "exp" || name == "nbf" || name == "iat") {
      if (!numericDate(value, name == "nbf", date)) return JwtError::Malformed;
      (name == "exp" ? out.exp : name == "nbf" ? out.nbf : out.iat) = date;
      continue;
    }
    values.clear();
    const bool strings = stringValues(value, values);
    if (name == "iss" || name == "sub") {
      if (!strings || !value.is_string()) return JwtError::Malformed;
      (name == "iss" ? out.issuer : out.subject) = values[0];
    } else if (name == "aud") {
      if (!strings) return JwtError::Malformed;
      out.audiences = values;
    }
    if (strings)
      for (auto& s : values) out.claims.emplace_back(std::string(name), std::move(s));
  }
  return JwtError::None;
}

// Parses a decoded JSON part; the parser is per thread so a request costs no
// parser allocation after the first.
JwtError withJson(std::string& decoded, dom::element& doc) {
  thread_local dom::parser parser;
  if (decoded.capacity() < decoded.size() + simdjson::SIMDJSON_PADDING)
    decoded.reserve(decoded.size() + simdjson::SIMDJSON_PADDING);
  return parser.parse(decoded).get(doc) ? JwtError::Malformed : JwtError::None;
}

}  // namespace

std::string_view JwtToken::claim(std::string_view name) const {
  for (const auto& [n, v] : claims)
    if (n == name) return v;
  return {};
}

JwtError parseJwt(std::string_view compact, JwtToken& out) {
  out = JwtToken{};
  if (compact.empty() || compact.size() > kMaxTokenBytes) return JwtError::Malformed;
  const auto dot1 = compact.find('.');
  if (dot1 == std::string_view::npos) return JwtError::Malformed;
  const auto dot2 = compact.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || compact.find('.', dot2 + 1) != std::string_view::npos)
    return JwtError::Malformed;
  const auto header_b64 = compact.substr(0, dot1);
  const auto payload_b64 = compact.substr(dot1 + 1, dot2 - dot1 - 1);
  const auto signature_b64 = compact.substr(dot2 + 1);
  if (header_b64.empty() || payload_b64.empty()) return JwtError::Malformed;

  std::string decoded;
  dom::element doc;
  if (!base64UrlDecode(header_b64, decoded) || withJson(decoded, doc) != JwtError::None) return JwtError::Malformed;
  if (const auto e = parseHeader(doc, out); e != JwtError::None) return e;
  if (!base64UrlDecode(payload_b64, decoded) || withJson(decoded, doc) != JwtError::None) return JwtError::Malformed;
  if (const auto e = parsePayload(doc, out); e != JwtError::None) return e;

  if (!base64UrlDecode(signature_b64, out.signature)) return JwtError::Malformed;
  // RS256: 2048..8192-bit moduli (JwkSet refuses others); ES256 and EdDSA: 64 bytes.
  const auto n = out.signature.size();
  if (out.alg == JwtAlg::RS256 ? (n < 256 || n > 1024) : n != 64) return JwtError::Malformed;
  out.signing_input = std::string(compact.substr(0, dot2));
  return JwtError::None;
}

// ---------------------------------------------------------------- keys

namespace {

struct BnFree {
  void operator()(BIGNUM* b) const { BN_free(b); }
};
using Bn = std::unique_ptr<BIGNUM, BnFree>;

PublicKey fromParams(const char* type, OSSL_PARAM_BLD* bld) {
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr);
  EVP_PKEY* key = nullptr;
  if (params == nullptr || ctx == nullptr || EVP_PKEY_fromdata_init(ctx) != 1 ||
      EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
    key = nullptr;
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  PublicKey out(key);
  if (out) {
    // fromdata takes the numbers as given; this refuses points off the curve,
    // even RSA moduli and tiny exponents.
    EVP_PKEY_CTX* check = EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr);
    if (check == nullptr || EVP_PKEY_public_check(check) != 1) out.reset();
    EVP_PKEY_CTX_free(check);
  }
  ERR_clear_error();
  return out;
}

struct ParamBldFree {
  void operator()(OSSL_PARAM_BLD* b) const { OSSL_PARAM_BLD_free(b); }
};

std::string_view member(dom::object obj, std::string_view name, bool& wrong_type) {
  std::string_view s;
  dom::element v;
  if (obj[name].get(v)) return {};
  if (v.get(s)) wrong_type = true;
  return s;
}

// A base64url member decoded, or an error text.
bool decodedMember(dom::object obj, std::string_view name, std::string& out, std::string& error) {
  bool wrong_type = false;
  const auto text = member(obj, name, wrong_type);
  if (wrong_type || text.empty() || !base64UrlDecode(text, out) || out.empty()) {
    error = "\"" + std::string(name) + "\" is missing or not base64url";
    return false;
  }
  return true;
}

PublicKey rsaKey(dom::object obj, std::string& error) {
  std::string n, e;
  if (!decodedMember(obj, "n", n, error) || !decodedMember(obj, "e", e, error)) return nullptr;
  Bn bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), static_cast<int>(n.size()), nullptr));
  Bn bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()), static_cast<int>(e.size()), nullptr));
  if (!bn_n || !bn_e) return nullptr;
  const int bits = BN_num_bits(bn_n.get());
  // Under 2048 bits is forgeable with enough effort; over 8192 only slows verification.
  if (bits < 2048 || bits > 8192) {
    error = "RSA modulus of " + std::to_string(bits) + " bits (2048..8192 accepted)";
    return nullptr;
  }
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1)
    return nullptr;
  auto key = fromParams("RSA", bld.get());
  if (!key) error = "not a valid RSA public key";
  return key;
}

PublicKey ecKey(dom::object obj, std::string& error) {
  std::string x, y;
  if (!decodedMember(obj, "x", x, error) || !decodedMember(obj, "y", y, error)) return nullptr;
  // RFC 7518 §6.2.1.2: full-length coordinates.
  if (x.size() != 32 || y.size() != 32) {
    error = "P-256 coordinates must be 32 bytes";
    return nullptr;
  }
  const std::string point = "\x04" + x + y;
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1)
    return nullptr;
  auto key = fromParams("EC", bld.get());
  if (!key) error = "not a point on P-256";
  return key;
}

PublicKey ed25519Key(dom::object obj, std::string& error) {
  std::string x;
  if (!decodedMember(obj, "x", x, error)) return nullptr;
  if (x.size() != 32) {
    error = "Ed25519 public key must be 32 bytes";
    return nullptr;
  }
  std::unique_ptr<OSSL_PARAM_BLD, ParamBldFree> bld(OSSL_PARAM_BLD_new());
  if (!bld || OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, x.data(), x.size()) != 1)
    return nullptr;
  auto key = fromParams("ED25519", bld.get());
  if (!key) error = "not a valid Ed25519 public key";
  return key;
}

// One JWK, or the reason it is skipped.
bool parseJwk(dom::element element, Jwk& out, std::string& error) {
  dom::object obj;
  if (element.get(obj)) {
    error = "not a JSON object";
    return false;
  }
  if (hasDuplicateMembers(obj)) {
    error = "a member name appears twice";
    return false;
  }
  bool wrong_type = false;
  const auto kty = member(obj, "kty", wrong_type);
  const auto crv = member(obj, "crv", wrong_type);
  const auto alg = member(obj, "alg", wrong_type);
  const auto use = member(obj, "use", wrong_type);
  const auto kid = member(obj, "kid", wrong_type);
  if (wrong_type) {
    error = "kty, crv, alg, use and kid must be strings";
    return false;
  }
  out.kid = std::string(kid);
  if (!use.empty() && use != "sig") {
    error = "use \"" + std::string(use) + "\" is not \"sig\"";
    return false;
  }
  dom::element ops_value;
  if (!obj["key_ops"].get(ops_value)) {
    dom::array ops;
    bool verify = false;
    if (!ops_value.get(ops))
      for (auto op : ops) verify = verify || (op.is_string() && op.get_string().value_unsafe() == "verify");
    if (!verify) {
      error = "key_ops does not include \"verify\"";
      return false;
    }
  }
  auto algIs = [&](std::string_view name) {
    if (alg.empty() || alg == name) return true;
    error = "alg \"" + std::string(alg) + "\" is not supported for kty " + std::string(kty);
    return false;
  };
  if (kty == "RSA") {
    if (!algIs("RS256")) return false;
    out.alg = JwtAlg::RS256;
    out.key = rsaKey(obj, error);
  } else if (kty == "EC") {
    if (crv != "P-256") {
      error = "crv \"" + std::string(crv) + "\" is not supported (P-256)";
      return false;
    }
    if (!algIs("ES256")) return false;
    out.alg = JwtAlg::ES256;
    out.key = ecKey(obj, error);
  } else if (kty == "OKP") {
    if (crv != "Ed25519") {
      error = "crv \"" + std::string(crv) + "\" is not supported (Ed25519)";
      return false;
    }
    if (!algIs("EdDSA")) return false;
    out.alg = JwtAlg::EdDSA;
    out.key = ed25519Key(obj, error);
  } else if (kty == "oct") {
    error = "kty \"oct\" (a shared secret) is not accepted";
    return false;
  } else {
    error = kty.empty() ? "no kty" : "kty \"" + std::string(kty) + "\" is not supported";
    return false;
  }
  return out.key != nullptr;
}

}  // namespace

std::shared_ptr<const JwkSet> JwkSet::parse(std::string_view json, std::string& error) {
  if (json.size() > kMaxJwksBytes) {
    error = "JWKS is over " + std::to_string(kMaxJwksBytes) + " bytes";
    return nullptr;
  }
  dom::parser parser;
  dom::element doc;
  if (const auto err = parser.parse(json.data(), json.size()).get(doc); err) {
    error = std::string("JWKS is not JSON: ") + simdjson::error_message(err);
    return nullptr;
  }
  dom::object root;
  dom::array keys;
  if (doc.get(root) || root["keys"].get(keys)) {
    error = "not a JWKS: no \"keys\" array";
    return nullptr;
  }
  if (hasDuplicateMembers(root)) {
    error = "not a JWKS: a member name appears twice";
    return nullptr;
  }
  auto set = std::make_shared<JwkSet>();
  std::size_t index = 0;
  for (auto element : keys) {
    Jwk jwk;
    std::string why;
    if (parseJwk(element, jwk, why)) {
      set->keys_.push_back(std::move(jwk));
    } else {
      std::string where = "key " + std::to_string(index);
      if (!jwk.kid.empty()) where += " (kid \"" + jwk.kid + "\")";
      set->skip_reasons_.push_back(where + ": " + why);
    }
    ++index;
  }
  ERR_clear_error();
  return set;
}

const Jwk* JwkSet::find(std::string_view kid) const {
  for (const auto& k : keys_)
    if (k.kid == kid) return &k;
  return nullptr;
}

// ---------------------------------------------------------------- verification

namespace {

const EVP_MD* sha256() {
  // Fetched once: EVP_sha256() in DigestVerifyInit looks the provider up on every call.
  static EVP_MD* md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return md;
}

bool keyFitsAlg(const Jwk& k) {
  switch (k.alg) {
    case JwtAlg::RS256: return EVP_PKEY_get_base_id(k.key.get()) == EVP_PKEY_RSA;
    case JwtAlg::ES256: return EVP_PKEY_get_base_id(k.key.get()) == EVP_PKEY_EC;
    case JwtAlg::EdDSA: return EVP_PKEY_get_base_id(k.key.get()) == EVP_PKEY_ED25519;
  }
  return false;
}

// JWS carries ECDSA signatures as r||s; OpenSSL verifies DER.
bool ecdsaDer(std::string_view raw, std::string& der) {
  ECDSA_SIG* sig = ECDSA_SIG_new();
  if (sig == nullptr) return false;
  const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
  BIGNUM* r = BN_bin2bn(p, 32, nullptr);
  BIGNUM* s = BN_bin2bn(p + 32, 32, nullptr);
  if (r == nullptr || s == nullptr || ECDSA_SIG_set0(sig, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return false;
  }
  const int len = i2d_ECDSA_SIG(sig, nullptr);
  bool ok = len > 0;
  if (ok) {
    der.resize(static_cast<std::size_t>(len));
    auto* out = reinterpret_cast<unsigned char*>(der.data());
    ok = i2d_ECDSA_SIG(sig, &out) == len;
  }
  ECDSA_SIG_free(sig);
  return ok;
}

bool verifySignature(const Jwk& k, const JwtToken& t) {
  if (!k.key || !keyFitsAlg(k)) return false;
  std::string der;
  std::string_view sig = t.signature;
  if (t.alg == JwtAlg::ES256) {
    if (sig.size() != 64 || !ecdsaDer(sig, der)) return false;
    sig = der;
  } else if (t.alg == JwtAlg::RS256) {
    if (static_cast<int>(sig.size()) != EVP_PKEY_get_size(k.key.get())) return false;
  } else if (sig.size() != 64) {
    return false;
  }
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  bool ok = ctx != nullptr &&
            EVP_DigestVerifyInit(ctx, &pctx, t.alg == JwtAlg::EdDSA ? nullptr : sha256(), nullptr, k.key.get()) == 1;
  if (ok && t.alg == JwtAlg::RS256) ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
  ok = ok && EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                              reinterpret_cast<const unsigned char*>(t.signing_input.data()),
                              t.signing_input.size()) == 1;
  EVP_MD_CTX_free(ctx);
  // A failed verification queues errors; the worker's TLS code reads the
  // same per-thread queue, so none may be left behind.
  if (!ok) ERR_clear_error();
  return ok;
}

}  // namespace

JwtError verifyJwt(const JwtToken& token, const JwkSet& keys, const JwtRequirements& req, std::int64_t now_unix) {
  if (req.issuer.empty() || token.issuer != req.issuer) return JwtError::BadIssuer;
  if (token.signing_input.empty()) return JwtError::Malformed;
  bool kid_found = false, alg_found = false, verified = false;
  for (const auto& k : keys.keys()) {
    if (!token.kid.empty() && k.kid != token.kid) continue;
    kid_found = true;
    if (k.alg != token.alg) continue;
    alg_found = true;
    if (verifySignature(k, token)) {
      verified = true;
      break;
    }
  }
  if (!token.kid.empty() && !kid_found) return JwtError::UnknownKid;
  if (!alg_found) return JwtError::KeyMismatch;
  if (!verified) return JwtError::BadSignature;

  const std::int64_t skew = std::clamp<std::int64_t>(req.clock_skew.count(), 0, 86400);
  const std::int64_t now = std::clamp<std::int64_t>(now_unix, -kMaxDate, kMaxDate);
  if (!token.exp) {
    if (req.require_exp) return JwtError::Expired;
  } else if (now - skew >= *token.exp) {
    return JwtError::Expired;
  }
  if (token.nbf && now + skew < *token.nbf) return JwtError::NotYetValid;
  if (!req.audiences.empty()) {
    const bool named = std::any_of(token.audiences.begin(), token.audiences.end(), [&](const std::string& a) {
      return std::find(req.audiences.begin(), req.audiences.end(), a) != req.audiences.end();
    });
    if (!named) return JwtError::BadAudience;
  }
  return JwtError::None;
}

}  // namespace infermesh::authn
