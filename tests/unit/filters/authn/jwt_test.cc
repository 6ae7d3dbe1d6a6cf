#include "filters/authn/jwt.h"

#include <gtest/gtest.h>

#include "tests/support/jwt_signer.h"

namespace infermesh::authn {
namespace {

using testing::KeyType;
using testing::SigningKey;

constexpr std::int64_t kNow = 1700000000;
constexpr const char* kIssuer = "https://issuer.test";

// Key generation (RSA especially) is slow; one set for the whole suite.
struct Keys {
  SigningKey rsa = SigningKey::generate(KeyType::Rsa2048);
  SigningKey rsa2 = SigningKey::generate(KeyType::Rsa2048);
  SigningKey ec = SigningKey::generate(KeyType::EcP256);
  SigningKey ed = SigningKey::generate(KeyType::Ed25519);
};
const Keys& keys() {
  static const Keys k;
  return k;
}

std::string claims(std::string extra = "") {
  return std::string(R"({"iss":")") + kIssuer + R"(","sub":"user-1","aud":"api","iat":)" + std::to_string(kNow) +
         R"(,"exp":)" + std::to_string(kNow + 600) + R"(,"tenant":"acme","groups":["a","b"])" + extra + "}";
}

std::shared_ptr<const JwkSet> set(std::vector<std::string> jwks) {
  std::string error;
  auto s = JwkSet::parse(testing::jwks(std::move(jwks)), error);
  EXPECT_NE(s, nullptr) << error;
  return s;
}

const JwkSet& standardSet() {
  static const auto s = set({testing::publicJwk(keys().rsa, "rsa"), testing::publicJwk(keys().ec, "ec"),
                             testing::publicJwk(keys().ed, "ed")});
  return *s;
}

JwtRequirements requirements() {
  JwtRequirements r;
  r.issuer = kIssuer;
  r.audiences = {"api"};
  return r;
}

JwtError check(const std::string& token, const JwkSet& set = standardSet(), const JwtRequirements& req = requirements(),
               std::int64_t now = kNow) {
  JwtToken t;
  if (const auto e = parseJwt(token, t); e != JwtError::None) return e;
  return verifyJwt(t, set, req, now);
}

JwtError parse(const std::string& token) {
  JwtToken t;
  return parseJwt(token, t);
}

std::string header(std::string_view alg, std::string extra = "") {
  return std::string(R"({"alg":")") + std::string(alg) + R"(","typ":"JWT")" + extra + "}";
}

TEST(Jwt, GoodTokensOfEveryAlgorithmVerify) {
  EXPECT_EQ(check(testing::makeJwt(keys().rsa, "rsa", claims())), JwtError::None);
  EXPECT_EQ(check(testing::makeJwt(keys().ec, "ec", claims())), JwtError::None);
  EXPECT_EQ(check(testing::makeJwt(keys().ed, "ed", claims())), JwtError::None);
}

TEST(Jwt, ClaimsAreDecoded) {
  JwtToken t;
  ASSERT_EQ(parseJwt(testing::makeJwt(keys().ec, "ec", claims(R"(,"n":5,"obj":{"x":"y"},"mixed":["a",1])")), t),
            JwtError::None);
  EXPECT_EQ(t.alg, JwtAlg::ES256);
  EXPECT_EQ(t.kid, "ec");
  EXPECT_EQ(t.issuer, kIssuer);
  EXPECT_EQ(t.subject, "user-1");
  EXPECT_EQ(t.audiences, std::vector<std::string>{"api"});
  EXPECT_EQ(t.exp, kNow + 600);
  EXPECT_EQ(t.iat, kNow);
  EXPECT_FALSE(t.nbf.has_value());
  EXPECT_EQ(t.claim("tenant"), "acme");
  EXPECT_EQ(t.claim("groups"), "a");
  EXPECT_EQ(std::count_if(t.claims.begin(), t.claims.end(), [](auto& c) { return c.first == "groups"; }), 2);
  // Only strings and arrays of strings are claims for tenant mapping.
  EXPECT_EQ(t.claim("n"), "");
  EXPECT_EQ(t.claim("obj"), "");
  EXPECT_EQ(t.claim("mixed"), "");
  EXPECT_EQ(t.claim("missing"), "");
}

TEST(Jwt, AlgNoneIsRefusedInAnySpelling) {
  for (const char* alg : {"none", "None", "NONE", "nOnE"})
    EXPECT_EQ(parse(testing::unsignedJwt(claims(), header(alg))), JwtError::AlgNotAllowed) << alg;
  // Even with a signature part attached.
  EXPECT_EQ(parse(testing::unsignedJwt(claims()) + "c2ln"), JwtError::AlgNotAllowed);
}

TEST(Jwt, HmacSignedWithTheRsaPublicKeyIsRefused) {
  // The classic confusion: a verifier that lets the token pick HS256 would
  // use the RSA key's public PEM as the HMAC secret and accept this.
  const auto pem = keys().rsa.publicPem();
  EXPECT_EQ(check(testing::hs256Jwt(pem, header("HS256", R"(,"kid":"rsa")"), claims())), JwtError::AlgNotAllowed);
  for (const char* alg : {"HS256", "HS384", "HS512", "PS256", "RS384", "RS512", "ES384", "ES512", "ES256K", "Ed25519",
                          "rs256", "RSA-OAEP", ""})
    EXPECT_EQ(parse(testing::hs256Jwt(pem, header(alg), claims())), JwtError::AlgNotAllowed) << alg;
}

TEST(Jwt, AKeyOfAnotherTypeUnderTheSameKidIsAMismatch) {
  const auto ec_as_k1 = set({testing::publicJwk(keys().ec, "k1")});
  const auto rsa_as_k1 = set({testing::publicJwk(keys().rsa, "k1")});
  const auto ed_as_k1 = set({testing::publicJwk(keys().ed, "k1")});
  EXPECT_EQ(check(testing::makeJwt(keys().rsa, "k1", claims()), *ec_as_k1), JwtError::KeyMismatch);
  EXPECT_EQ(check(testing::makeJwt(keys().ec, "k1", claims()), *rsa_as_k1), JwtError::KeyMismatch);
  EXPECT_EQ(check(testing::makeJwt(keys().ed, "k1", claims()), *rsa_as_k1), JwtError::KeyMismatch);
  EXPECT_EQ(check(testing::makeJwt(keys().rsa, "k1", claims()), *ed_as_k1), JwtError::KeyMismatch);
  // An RS256 signature relabelled ES256 is refused before any crypto runs.
  const auto rs = testing::makeJwt(keys().rsa, "k1", claims());
  const auto relabelled = testing::base64Url(header("ES256", R"(,"kid":"k1")")) + rs.substr(rs.find('.'));
  EXPECT_EQ(check(relabelled, *ec_as_k1), JwtError::Malformed);
}

TEST(Jwt, UnknownKid) {
  EXPECT_EQ(check(testing::makeJwt(keys().rsa, "nope", claims())), JwtError::UnknownKid);
}

TEST(Jwt, ATokenWithoutKidTriesEveryKeyOfItsAlg) {
  const auto two = set({testing::publicJwk(keys().rsa2, "other"), testing::publicJwk(keys().rsa, "rsa")});
  EXPECT_EQ(check(testing::makeJwt(keys().rsa, "", claims()), *two), JwtError::None);
  EXPECT_EQ(check(testing::makeJwt(keys().ec, "", claims()), *two), JwtError::KeyMismatch);
  const auto other = set({testing::publicJwk(keys().rsa2, "other")});
  EXPECT_EQ(check(testing::makeJwt(keys().rsa, "", claims()), *other), JwtError::BadSignature);
}

TEST(Jwt, ASignatureFromAnotherKeyWithTheSameKidIsBad) {
  const auto impostor = set({testing::publicJwk(keys().rsa2, "rsa")});
  EXPECT_EQ(check(testing::makeJwt(keys().rsa, "rsa", claims()), *impostor), JwtError::BadSignature);
}

TEST(Jwt, AFlippedSignatureByteIsABadSignature) {
  for (const auto* key : {&keys().rsa, &keys().ec, &keys().ed}) {
    const std::string kid = key == &keys().rsa ? "rsa" : key == &keys().ec ? "ec" : "ed";
    const auto token = testing::makeJwt(*key, kid, claims());
    EXPECT_EQ(check(testing::withFlippedSignatureByte(token, 0)), JwtError::BadSignature) << kid;
    EXPECT_EQ(check(testing::withFlippedSignatureByte(token, 40)), JwtError::BadSignature) << kid;
  }
}

TEST(Jwt, ATamperedPayloadIsABadSignature) {
  for (const auto* key : {&keys().rsa, &keys().ec, &keys().ed}) {
    const std::string kid = key == &keys().rsa ? "rsa" : key == &keys().ec ? "ec" : "ed";
    const auto token = testing::makeJwt(*key, kid, claims());
    EXPECT_EQ(check(testing::withPayload(token, claims(R"(,"admin":"true")"))), JwtError::BadSignature) << kid;
  }
}

TEST(Jwt, ExpiryAllowsTheClockSkewAndNoMore) {
  const auto token = [](std::string times) {
    return testing::makeJwt(keys().ec, "ec",
                            std::string(R"({"iss":")") + kIssuer + R"(","aud":"api")" + times + "}");
  };
  const auto exp = token(R"(,"exp":)" + std::to_string(kNow));
  EXPECT_EQ(check(exp, standardSet(), requirements(), kNow - 1), JwtError::None);
  EXPECT_EQ(check(exp, standardSet(), requirements(), kNow + 59), JwtError::None);
  EXPECT_EQ(check(exp, standardSet(), requirements(), kNow + 60), JwtError::Expired);
  auto strict = requirements();
  strict.clock_skew = std::chrono::seconds(0);
  EXPECT_EQ(check(exp, standardSet(), strict, kNow - 1), JwtError::None);
  EXPECT_EQ(check(exp, standardSet(), strict, kNow), JwtError::Expired);
  // A fraction rounds down for exp: 1700000000.9 expires at ...000.
  EXPECT_EQ(check(token(R"(,"exp":1700000000.9)"), standardSet(), strict, kNow), JwtError::Expired);

  const auto nbf = token(R"(,"exp":)" + std::to_string(kNow + 3600) + R"(,"nbf":)" + std::to_string(kNow));
  EXPECT_EQ(check(nbf, standardSet(), requirements(), kNow - 60), JwtError::None);
  EXPECT_EQ(check(nbf, standardSet(), requirements(), kNow - 61), JwtError::NotYetValid);
  EXPECT_EQ(check(nbf, standardSet(), strict, kNow), JwtError::None);
  EXPECT_EQ(check(nbf, standardSet(), strict, kNow - 1), JwtError::NotYetValid);
  // ... and up for nbf.
  EXPECT_EQ(check(token(R"(,"exp":1800000000,"nbf":1699999999.1)"), standardSet(), strict, kNow - 1),
            JwtError::NotYetValid);

  // No exp: refused by default as having no lifetime left.
  const auto forever = token("");
  EXPECT_EQ(check(forever), JwtError::Expired);
  auto lenient = requirements();
  lenient.require_exp = false;
  EXPECT_EQ(check(forever, standardSet(), lenient), JwtError::None);

  // A huge skew is clamped, not overflowed.
  auto huge = requirements();
  huge.clock_skew = std::chrono::seconds(std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(check(exp, standardSet(), huge, kNow + 86399), JwtError::None);
  EXPECT_EQ(check(exp, standardSet(), huge, kNow + 86400), JwtError::Expired);
  EXPECT_EQ(check(exp, standardSet(), huge, std::numeric_limits<std::int64_t>::max()), JwtError::Expired);
  EXPECT_EQ(check(nbf, standardSet(), huge, std::numeric_limits<std::int64_t>::min()), JwtError::NotYetValid);
}

TEST(Jwt, IssuerMustMatchExactly) {
  const auto with_iss = [](std::string iss) {
    return testing::makeJwt(keys().ed, "ed", R"({"iss":)" + iss + R"(,"aud":"api","exp":1700000600})");
  };
  EXPECT_EQ(check(with_iss(R"("https://evil.test")")), JwtError::BadIssuer);
  EXPECT_EQ(check(with_iss(R"("https://issuer.test/")")), JwtError::BadIssuer);
  EXPECT_EQ(check(testing::makeJwt(keys().ed, "ed", R"({"aud":"api","exp":1700000600})")), JwtError::BadIssuer);
  auto none = requirements();
  none.issuer.clear();
  EXPECT_EQ(check(testing::makeJwt(keys().ed, "ed", R"({"aud":"api","exp":1700000600})"), standardSet(), none),
            JwtError::BadIssuer);
  EXPECT_EQ(check(with_iss("5")), JwtError::Malformed);
}

TEST(Jwt, AudienceAsAStringOrAnArray) {
  const auto with_aud = [](std::string aud) {
    return testing::makeJwt(keys().rsa, "rsa",
                            std::string(R"({"iss":")") + kIssuer + R"(","exp":1700000600)" + aud + "}");
  };
  auto req = requirements();
  req.audiences = {"api", "other-api"};
  EXPECT_EQ(check(with_aud(R"(,"aud":"other-api")"), standardSet(), req), JwtError::None);
  EXPECT_EQ(check(with_aud(R"(,"aud":["x","api"])"), standardSet(), req), JwtError::None);
  EXPECT_EQ(check(with_aud(R"(,"aud":["x","y"])"), standardSet(), req), JwtError::BadAudience);
  EXPECT_EQ(check(with_aud(R"(,"aud":[])"), standardSet(), req), JwtError::BadAudience);
  EXPECT_EQ(check(with_aud(R"(,"aud":"API")"), standardSet(), req), JwtError::BadAudience);
  EXPECT_EQ(check(with_aud(""), standardSet(), req), JwtError::BadAudience);
  EXPECT_EQ(check(with_aud(R"(,"aud":5)"), standardSet(), req), JwtError::Malformed);
  EXPECT_EQ(check(with_aud(R"(,"aud":["api",5])"), standardSet(), req), JwtError::Malformed);
  // No audience configured: aud is not checked.
  req.audiences.clear();
  EXPECT_EQ(check(with_aud(""), standardSet(), req), JwtError::None);
  EXPECT_EQ(check(with_aud(R"(,"aud":"anything")"), standardSet(), req), JwtError::None);
}

TEST(Jwt, MalformedEncodingsAndShapes) {
  const auto good = testing::makeJwt(keys().ec, "ec", claims());
  ASSERT_EQ(check(good), JwtError::None);
  const auto dot1 = good.find('.');
  const auto dot2 = good.rfind('.');
  const std::string h = good.substr(0, dot1), p = good.substr(dot1 + 1, dot2 - dot1 - 1), s = good.substr(dot2 + 1);

  for (const std::string& bad : {
           std::string(), std::string("."), std::string(".."), h, h + "." + p, h + "." + p + "." + s + ".",
           h + "." + p + "." + s + ".x.y",  // JWE-shaped
           "." + p + "." + s, h + ".." + s, h + "." + p + ".",
           h + "=." + p + "." + s,        // padding
           h + "." + p + "=." + s,
           h + "." + p + "." + s + "==",
           " " + good, good + " ", h + ".\n" + p + "." + s,
           h + "+." + p + "." + s,         // standard-alphabet bytes
           h + "." + p + "." + s.substr(0, s.size() - 1) + "/",
           h + "A." + p + "." + s,         // a length of 4n+1
       })
    EXPECT_EQ(check(bad), JwtError::Malformed) << bad;

  // 64 bytes of signature is 86 characters whose last carries 2 unused bits;
  // setting them is another encoding of the same bytes.
  std::string loose = s;
  const char last = loose.back();
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  loose.back() = alphabet[alphabet.find(last) | 1];
  if (loose.back() != last) EXPECT_EQ(check(h + "." + p + "." + loose), JwtError::Malformed);

  EXPECT_EQ(check(good + std::string(kMaxTokenBytes, 'A')), JwtError::Malformed);
  const auto big = testing::makeJwt(keys().ec, "ec", claims(R"(,"pad":")" + std::string(kMaxTokenBytes, 'x') + "\""));
  EXPECT_EQ(check(big), JwtError::Malformed);
}

TEST(Jwt, HeaderAndPayloadMustBeObjects) {
  const auto& k = keys().ec;
  for (const char* header_json : {"[]", R"("ES256")", "5", "null", "", "{", R"({"alg":"ES256"} x)", "\xff"})
    EXPECT_EQ(check(testing::signJwt(k, header_json, claims())), JwtError::Malformed) << header_json;
  for (const char* payload : {"[]", R"("sub")", "5", "null", "", "not json", R"({"a":1}{})"})
    EXPECT_EQ(check(testing::signJwt(k, header("ES256", R"(,"kid":"ec")"), payload)), JwtError::Malformed) << payload;
}

TEST(Jwt, OddOrDuplicateHeaderFields) {
  const auto& k = keys().ec;
  const auto with_header = [&](std::string h) { return check(testing::signJwt(k, h, claims())); };
  EXPECT_EQ(with_header(R"({"alg":"ES256","kid":"ec"})"), JwtError::None);  // typ may be absent
  EXPECT_EQ(with_header(R"({"alg":"ES256","kid":"ec","typ":"jwt"})"), JwtError::None);
  EXPECT_EQ(with_header(R"({"alg":"ES256","kid":"ec","typ":"at+jwt"})"), JwtError::None);
  EXPECT_EQ(with_header(R"({"alg":"ES256","kid":"ec","typ":"application/JWT"})"), JwtError::None);
  EXPECT_EQ(with_header(R"({"alg":"ES256","kid":"ec","typ":"JOSE"})"), JwtError::Malformed);
  EXPECT_EQ(with_header(R"({"alg":"ES256","kid":"ec","typ":"dpop+jwt"})"), JwtError::Malformed);
  EXPECT_EQ(with_header(R"({"alg":"ES256","kid":"ec","typ":1})"), JwtError::Malformed);
  EXPECT_EQ(with_header(R"({"alg":"ES256","kid":"ec","crit":["exp"]})"), JwtError::Malformed);
  EXPECT_EQ(with_header(R"({"alg":"ES256","kid":"ec","crit":[]})"), JwtError::Malformed);
  EXPECT_EQ(with_header(R"({"alg":"ES256","kid":"ec","b64":false,"crit":["b64"]})"), JwtError::Malformed);
  EXPECT_EQ(with_header(R"({"alg":"ES256","alg":"ES256","kid":"ec"})"), JwtError::Malformed);
  EXPECT_EQ(with_header(R"({"alg":"none","alg":"ES256","kid":"ec"})"), JwtError::Malformed);
  EXPECT_EQ(with_header(R"({"alg":"ES256","kid":"ec","kid":"rsa"})"), JwtError::Malformed);
  // An escaped name is the same name.
  EXPECT_EQ(with_header(R"({"alg":"ES256","\u0061lg":"ES256","kid":"ec"})"), JwtError::Malformed);
  EXPECT_EQ(with_header(R"({"kid":"ec"})"), JwtError::Malformed);
  EXPECT_EQ(with_header(R"({"alg":256,"kid":"ec"})"), JwtError::Malformed);
  EXPECT_EQ(with_header(R"({"alg":"ES256","kid":5})"), JwtError::Malformed);
  EXPECT_EQ(with_header(R"({"alg":"ES256","kid":""})"), JwtError::Malformed);
  // Keys a token brings itself (jwk, jku, x5u, x5c) are never used.
  const auto attacker = SigningKey::generate(KeyType::EcP256);
  const auto embedded = testing::signJwt(
      attacker, R"({"alg":"ES256","kid":"ec","jwk":)" + testing::publicJwk(attacker, "ec") + R"(,"jku":"https://evil.test/"})",
      claims());
  EXPECT_EQ(check(embedded), JwtError::BadSignature);
}

TEST(Jwt, ClaimTypesAreChecked) {
  const auto& k = keys().ed;
  const auto with = [&](std::string payload) { return check(testing::makeJwt(k, "ed", payload)); };
  const std::string base = std::string(R"({"iss":")") + kIssuer + R"(","aud":"api")";
  EXPECT_EQ(with(base + R"(,"exp":"1700000600"})"), JwtError::Malformed);
  EXPECT_EQ(with(base + R"(,"exp":true})"), JwtError::Malformed);
  EXPECT_EQ(with(base + R"(,"exp":1e300})"), JwtError::Malformed);
  EXPECT_EQ(with(base + R"(,"exp":18446744073709551615})"), JwtError::Malformed);
  EXPECT_EQ(with(base + R"(,"exp":1700000600,"nbf":null})"), JwtError::Malformed);
  EXPECT_EQ(with(base + R"(,"exp":1700000600,"iat":[1]})"), JwtError::Malformed);
  EXPECT_EQ(with(base + R"(,"exp":1700000600,"sub":["a"]})"), JwtError::Malformed);
  EXPECT_EQ(with(base + R"(,"exp":1700000600,"exp":1800000000})"), JwtError::Malformed);
  EXPECT_EQ(with(base + R"(,"exp":1700000600.5})"), JwtError::None);
}

TEST(Jwt, SignatureLengthsAreChecked) {
  const auto good = testing::makeJwt(keys().ec, "ec", claims());
  const auto input = good.substr(0, good.rfind('.') + 1);
  EXPECT_EQ(check(input + testing::base64Url(std::string(63, 'x'))), JwtError::Malformed);
  EXPECT_EQ(check(input + testing::base64Url(std::string(65, 'x'))), JwtError::Malformed);
  // r or s of zero, or all ones, is no signature.
  EXPECT_EQ(check(input + testing::base64Url(std::string(64, '\0'))), JwtError::BadSignature);
  EXPECT_EQ(check(input + testing::base64Url(std::string(64, '\xff'))), JwtError::BadSignature);
  const auto rs = testing::makeJwt(keys().rsa, "rsa", claims());
  const auto rs_input = rs.substr(0, rs.rfind('.') + 1);
  EXPECT_EQ(check(rs_input + testing::base64Url(std::string(255, 'x'))), JwtError::Malformed);
  EXPECT_EQ(check(rs_input + testing::base64Url(std::string(512, 'x'))), JwtError::BadSignature);
}

TEST(Jwt, ReasonCodes) {
  EXPECT_STREQ(reasonCode(JwtError::Malformed), "jwt_malformed");
  EXPECT_STREQ(reasonCode(JwtError::AlgNotAllowed), "jwt_alg_not_allowed");
  EXPECT_STREQ(reasonCode(JwtError::UnknownKid), "jwt_unknown_kid");
  EXPECT_STREQ(reasonCode(JwtError::KeyMismatch), "jwt_key_mismatch");
  EXPECT_STREQ(reasonCode(JwtError::BadSignature), "jwt_bad_signature");
  EXPECT_STREQ(reasonCode(JwtError::Expired), "jwt_expired");
  EXPECT_STREQ(reasonCode(JwtError::NotYetValid), "jwt_not_yet_valid");
  EXPECT_STREQ(reasonCode(JwtError::BadIssuer), "jwt_bad_issuer");
  EXPECT_STREQ(reasonCode(JwtError::BadAudience), "jwt_bad_audience");
}

TEST(Jwt, Base64UrlIsStrict) {
  std::string out;
  EXPECT_TRUE(base64UrlDecode("", out));
  EXPECT_EQ(out, "");
  EXPECT_TRUE(base64UrlDecode("Zm9vYmFy", out));
  EXPECT_EQ(out, "foobar");
  EXPECT_TRUE(base64UrlDecode("Zm9vYg", out));
  EXPECT_EQ(out, "foob");
  EXPECT_TRUE(base64UrlDecode("Zm9vYmE", out));
  EXPECT_EQ(out, "fooba");
  EXPECT_TRUE(base64UrlDecode("-_8", out));
  EXPECT_EQ(out, "\xfb\xff");
  for (const char* bad : {"Zm9vYg==", "Zm9vYg=", "Zm9vY", "Z", "+/8", "Zm9v Yg", "Zm9vYh", "Zm9vYmF"})
    EXPECT_FALSE(base64UrlDecode(bad, out)) << bad;
  EXPECT_FALSE(base64UrlDecode(std::string_view("Zm9v\0Yg", 7), out));
}

// ---------------------------------------------------------------- JWKS

std::string withoutAlg(std::string jwk) {
  const auto at = jwk.find(R"(,"alg":")");
  return jwk.erase(at, jwk.find('"', at + 8) + 1 - at);
}

TEST(Jwks, MixedGoodAndBadKeys) {
  const auto rsa = testing::publicJwk(keys().rsa, "rsa");
  const auto ec = testing::publicJwk(keys().ec, "ec");
  const auto ed = testing::publicJwk(keys().ed, "ed");
  const std::string x32 = testing::base64Url(std::string(32, '\x01'));
  const std::string n1024 = testing::base64Url("\xc1" + std::string(127, '\x01'));
  const std::vector<std::string> bad = {
      R"({"kty":"oct","k":"c2VjcmV0","kid":"hs"})",
      R"({"kty":"RSA","n":"AQAB","e":"AQAB","use":"enc","kid":"enc"})",
      R"({"kty":"EC","crv":"P-384","x":")" + x32 + R"(","y":")" + x32 + R"(","kid":"p384"})",
      R"({"kty":"EC","crv":"P-256","x":")" + testing::base64Url(std::string(31, '\x01')) + R"(","y":")" + x32 +
          R"(","kid":"short"})",
      R"({"kty":"EC","crv":"P-256","x":")" + x32 + R"(","y":")" + x32 + R"(","kid":"offcurve"})",
      R"({"kty":"RSA","n":")" + n1024 + R"(","e":"AQAB","kid":"rsa1024"})",
      R"({"kty":"OKP","crv":"X25519","x":")" + x32 + R"(","kid":"x25519"})",
      R"({"kty":"RSA","n":"","e":"AQAB"})",
      R"({"kty":"RSA","e":"AQAB"})",
      R"({"kty":"RSA","n":"AQ==","e":"AQAB"})",
      R"({"kid":"nokty"})",
      R"({"kty":5})",
      R"("a string")",
      "[]",
      // Right type, wrong algorithm for it.
      R"({"alg":"PS256",)" + withoutAlg(rsa).substr(1),
      R"({"alg":"RS256",)" + withoutAlg(ec).substr(1),
      R"({"alg":"ES256",)" + withoutAlg(ed).substr(1),
      ec.substr(0, ec.size() - 1) + R"(,"kid":"twice"})",
      R"({"key_ops":["sign"],)" + ed.substr(1),
      R"({"key_ops":"verify",)" + ed.substr(1),
  };
  std::vector<std::string> all = {rsa, ec, ed};
  all.insert(all.end(), bad.begin(), bad.end());
  std::string error;
  const auto s = JwkSet::parse(testing::jwks(all), error);
  ASSERT_NE(s, nullptr) << error;
  EXPECT_EQ(s->size(), 3u);
  EXPECT_EQ(s->skipped(), bad.size());
  for (const auto& why : s->skipReasons()) EXPECT_NE(why.find("key "), std::string::npos) << why;
  EXPECT_NE(s->skipReasons()[0].find("oct"), std::string::npos) << s->skipReasons()[0];
  ASSERT_NE(s->find("rsa"), nullptr);
  EXPECT_EQ(s->find("rsa")->alg, JwtAlg::RS256);
  EXPECT_EQ(s->find("ec")->alg, JwtAlg::ES256);
  EXPECT_EQ(s->find("ed")->alg, JwtAlg::EdDSA);
  EXPECT_EQ(s->find("hs"), nullptr);
  EXPECT_EQ(s->find("offcurve"), nullptr);
  EXPECT_EQ(check(testing::makeJwt(keys().ec, "ec", claims()), *s), JwtError::None);
}

TEST(Jwks, AlgIsTakenFromTheKeyTypeWhenAbsent) {
  const auto s = set({withoutAlg(testing::publicJwk(keys().ec, "ec"))});
  ASSERT_EQ(s->size(), 1u);
  EXPECT_EQ(s->find("ec")->alg, JwtAlg::ES256);
  EXPECT_EQ(check(testing::makeJwt(keys().ec, "ec", claims()), *s), JwtError::None);
}

TEST(Jwks, DocumentsThatAreNotAJwks) {
  for (const std::string& doc : std::vector<std::string>{"", "[]", "{}", R"({"keys":{}})", R"({"keys":"x"})", R"({"keys":[]} trailing)", "not json",
        R"({"keys":[],"keys":[]})", std::string(kMaxJwksBytes + 1, ' ')}) {
    std::string error;
    EXPECT_EQ(JwkSet::parse(doc, error), nullptr) << doc.substr(0, 40);
    EXPECT_FALSE(error.empty());
  }
  std::string error;
  const auto empty = JwkSet::parse(R"({"keys":[],"other":1})", error);
  ASSERT_NE(empty, nullptr);
  EXPECT_EQ(empty->size(), 0u);
}

}  // namespace
}  // namespace infermesh::authn
