// JWT and JWKS parsing (filters/authn/jwt.*): a bearer token comes from any
// client, a JWKS from a file or an issuer's URL. Input: a token, then
// optionally a NUL and a JWKS document.
//
// Properties: a parsed token has a known alg, a signature of that alg's
// size and a signing input that is the token up to its last dot; no token
// verifies against keys generated at start-up (the fuzzer holds no private
// key, so one that did would be a forgery); a parsed JWKS holds only keys
// whose type fits their alg; a refused document says why.
//
// Seeds: INFERMESH_FUZZ_WRITE_SEEDS=<dir> writes tokens signed by the
// start-up keys, each with the JWKS that verifies it, and exits.

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "filters/authn/jwt.h"
#include "fuzz_check.h"
#include "tests/support/jwt_signer.h"

using namespace infermesh;
using authn::JwtError;

namespace {

// The path where a kid-less token tries every key of its alg.
std::string withoutKid(std::string jwk) {
  const std::string empty = R"(,"kid":"")";
  return jwk.erase(jwk.find(empty), empty.size());
}

struct Fixture {
  testing::SigningKey rsa = testing::SigningKey::generate(testing::KeyType::Rsa2048);
  testing::SigningKey ec = testing::SigningKey::generate(testing::KeyType::EcP256);
  testing::SigningKey ed = testing::SigningKey::generate(testing::KeyType::Ed25519);
  testing::SigningKey ed2 = testing::SigningKey::generate(testing::KeyType::Ed25519);
  std::string jwks_text = testing::jwks({testing::publicJwk(rsa, "rsa"), testing::publicJwk(ec, "ec"),
                                         testing::publicJwk(ed, "ed"), withoutKid(testing::publicJwk(ed2, ""))});
  std::shared_ptr<const authn::JwkSet> keys;
  std::string good;  // a valid token for these keys, to verify against fuzzed sets
  authn::JwtRequirements req;

  Fixture() {
    std::string error;
    keys = authn::JwkSet::parse(jwks_text, error);
    FUZZ_CHECK(keys != nullptr && keys->size() == 4);
    good = testing::makeJwt(ec, "ec", R"({"iss":"https://issuer.test","aud":"api","exp":2000000000})");
    req.issuer = "https://issuer.test";
    req.audiences = {"api"};
  }
};

const Fixture& fixture() {
  static const Fixture f;
  return f;
}

constexpr std::int64_t kNow = 1700000000;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const auto& f = fixture();
  if (const char* dir = std::getenv("INFERMESH_FUZZ_WRITE_SEEDS")) {
    const std::string payload =
        R"({"iss":"https://issuer.test","sub":"u","aud":["api","x"],"exp":2000000000,"nbf":1600000000.5,)"
        R"("tenant":"acme","groups":["a","b"]})";
    const std::string seeds[] = {
        f.good,
        testing::makeJwt(f.rsa, "rsa", payload),
        testing::makeJwt(f.ec, "ec", payload),
        testing::makeJwt(f.ed, "ed", payload),
        testing::makeJwt(f.ed, "", payload),
        testing::signJwt(f.rsa, R"({"alg":"RS256","typ":"at+jwt","kid":"rsa","jku":"https://x/"})", payload),
        testing::hs256Jwt(f.rsa.publicPem(), R"({"alg":"HS256","kid":"rsa"})", payload),
        testing::unsignedJwt(payload),
    };
    int i = 0;
    for (const auto& token : seeds) {
      std::ofstream out(std::string(dir) + "/seed-" + std::to_string(i++), std::ios::binary);
      out << token << '\0' << f.jwks_text;
    }
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto& f = fixture();
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto nul = in.find('\0');
  const std::string_view token_text = in.substr(0, nul);

  authn::JwtToken token;
  const JwtError parsed = authn::parseJwt(token_text, token);
  if (parsed == JwtError::None) {
    FUZZ_CHECK(token_text.size() <= authn::kMaxTokenBytes);
    FUZZ_CHECK(token_text.substr(0, token_text.rfind('.')) == token.signing_input);
    const auto n = token.signature.size();
    FUZZ_CHECK(token.alg == authn::JwtAlg::RS256 ? (n >= 256 && n <= 1024) : n == 64);
    for (const auto& [name, value] : token.claims) FUZZ_CHECK(token.claim(name).data() != nullptr);
    if (!token.issuer.empty()) FUZZ_CHECK(token.claim("iss") == token.issuer);
    const JwtError verified = authn::verifyJwt(token, *f.keys, f.req, kNow);
    FUZZ_CHECK(verified != JwtError::None || token_text == f.good);
    FUZZ_CHECK(*authn::reasonCode(verified) != '\0' || verified == JwtError::None);
  } else {
    FUZZ_CHECK(*authn::reasonCode(parsed) != '\0');
  }

  if (nul == std::string_view::npos) return 0;
  std::string error;
  const auto set = authn::JwkSet::parse(in.substr(nul + 1), error);
  if (set == nullptr) {
    FUZZ_CHECK(!error.empty());
    return 0;
  }
  FUZZ_CHECK(set->skipReasons().size() == set->skipped());
  for (const auto& why : set->skipReasons()) FUZZ_CHECK(!why.empty());
  for (const auto& k : set->keys()) {
    FUZZ_CHECK(k.key != nullptr);
    FUZZ_CHECK(set->find(k.kid) != nullptr);
  }
  authn::JwtToken good;
  FUZZ_CHECK(authn::parseJwt(f.good, good) == JwtError::None);
  (void)authn::verifyJwt(good, *set, f.req, kNow);
  if (parsed == JwtError::None) (void)authn::verifyJwt(token, *set, f.req, kNow);
  return 0;
}
