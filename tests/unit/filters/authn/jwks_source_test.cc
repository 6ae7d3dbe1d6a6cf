#include "filters/authn/jwks_source.h"

#include <gtest/gtest.h>

#include <cstdio>

#include "tests/support/jwks_server.h"
#include "tests/support/jwt_signer.h"
#include "tests/support/process.h"
#include "tests/support/test_certs.h"

namespace infermesh::authn {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::JwksServer;
using testing::KeyType;
using testing::SigningKey;

const SigningKey& keyA() {
  static const auto k = SigningKey::generate(KeyType::EcP256);
  return k;
}
const SigningKey& keyB() {
  static const auto k = SigningKey::generate(KeyType::Ed25519);
  return k;
}
const std::string& setA() {
  static const auto s = testing::jwks({testing::publicJwk(keyA(), "a")});
  return s;
}
const std::string& setAB() {
  static const auto s = testing::jwks({testing::publicJwk(keyA(), "a"), testing::publicJwk(keyB(), "b")});
  return s;
}

bool hasKid(const JwksSource& source, std::string_view kid) {
  const auto keys = source.keys();
  return keys != nullptr && keys->find(kid) != nullptr;
}

JwksSpec uriSpec(const JwksServer& server) {
  JwksSpec spec;
  spec.uri = server.url();
  spec.ca_file = server.caFile();
  spec.refresh = 1h;
  spec.min_refetch = 1h;
  spec.timeout = 2s;
  return spec;
}

TEST(JwksSpecs, OnlyHttpsUrlsAndOneSource) {
  std::string error;
  JwksSpec spec;
  spec.uri = "https://idp.example.com/.well-known/jwks.json";
  EXPECT_TRUE(validateJwksSpec(spec, error)) << error;
  spec.uri = "https://[::1]:8443/keys?x=1";
  EXPECT_TRUE(validateJwksSpec(spec, error)) << error;
  spec.uri = "HTTPS://idp.example.com";
  EXPECT_TRUE(validateJwksSpec(spec, error)) << error;

  spec.uri = "http://idp.example.com/jwks.json";
  EXPECT_FALSE(validateJwksSpec(spec, error));
  EXPECT_NE(error.find("only https://"), std::string::npos) << error;
  for (const char* bad : {"ftp://x/", "https://", "https:///path", "https://user:pw@idp/", "https://idp:0/",
                          "https://idp:99999/", "https://idp:/", "https://idp:12a/", "https://id p/", "https://[::1/",
                          "https://idp/\r\nx", "https://i_dp/", "idp.example.com/jwks"}) {
    spec.uri = bad;
    error.clear();
    EXPECT_FALSE(validateJwksSpec(spec, error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
  }

  JwksSpec both;
  both.uri = "https://idp/";
  both.file = "/etc/jwks.json";
  EXPECT_FALSE(validateJwksSpec(both, error));
  EXPECT_FALSE(validateJwksSpec(JwksSpec{}, error));
  JwksSpec zero;
  zero.file = "/etc/jwks.json";
  zero.refresh = 0ms;
  EXPECT_FALSE(validateJwksSpec(zero, error));
}

TEST(JwksSource, AnHttpUrlNeverLoadsAndSaysWhy) {
  JwksSpec spec;
  spec.uri = "http://127.0.0.1:1/jwks.json";
  const auto source = JwksSources::instance().get(spec);
  ASSERT_NE(source, nullptr);
  EXPECT_FALSE(source->waitReady(100ms));
  EXPECT_EQ(source->keys(), nullptr);
  EXPECT_NE(source->lastError().find("https://"), std::string::npos) << source->lastError();
  EXPECT_EQ(source->fetchesFailed(), 1u);
  source->onUnknownKid();  // harmless
}

TEST(JwksSource, AFileIsLoadedAtOnceAndReloadedWhenItChanges) {
  testing::TempDir dir;
  dir.write("jwks.json", setA());
  JwksSpec spec;
  spec.file = dir.path() + "/jwks.json";
  spec.refresh = 50ms;
  const auto source = JwksSources::instance().get(spec);
  ASSERT_TRUE(source->waitReady(0ms));
  EXPECT_TRUE(hasKid(*source, "a"));
  EXPECT_FALSE(hasKid(*source, "b"));
  EXPECT_EQ(source->fetchesOk(), 1u);

  dir.write("jwks.json", setAB());
  EXPECT_TRUE(eventually([&] { return hasKid(*source, "b"); }));
  EXPECT_EQ(source->fetchesOk(), 2u);
  EXPECT_EQ(source->fetchesFailed(), 0u);
}

TEST(JwksSource, ABadFileKeepsTheLastGoodKeys) {
  testing::TempDir dir;
  dir.write("jwks.json", setA());
  JwksSpec spec;
  spec.file = dir.path() + "/jwks.json";
  spec.refresh = 50ms;
  const auto source = JwksSources::instance().get(spec);
  ASSERT_TRUE(hasKid(*source, "a"));

  for (const std::string bad : {"{not json", R"({"keys":[{"kty":"oct","k":"c2VjcmV0"}]})", R"({"keys":[]})"}) {
    const auto failed = source->fetchesFailed();
    dir.write("jwks.json", bad);
    EXPECT_TRUE(eventually([&] { return source->fetchesFailed() > failed; })) << bad;
    EXPECT_TRUE(hasKid(*source, "a")) << bad;
    EXPECT_FALSE(source->lastError().empty());
  }
  std::remove(spec.file.c_str());
  EXPECT_TRUE(eventually([&] { return source->lastError().find("cannot read") != std::string::npos; }));
  EXPECT_TRUE(hasKid(*source, "a"));

  dir.write("jwks.json", setAB());
  EXPECT_TRUE(eventually([&] { return hasKid(*source, "b"); }));
  EXPECT_EQ(source->lastError(), "");
}

TEST(JwksSource, AMissingFileIsNotReady) {
  JwksSpec spec;
  spec.file = "/nonexistent/infermesh/jwks.json";
  const auto source = JwksSources::instance().get(spec);
  EXPECT_FALSE(source->waitReady(1s));
  EXPECT_EQ(source->keys(), nullptr);
  EXPECT_NE(source->lastError().find("cannot read"), std::string::npos) << source->lastError();
}

TEST(JwksSource, AnUnknownKidRereadsTheFile) {
  testing::TempDir dir;
  dir.write("jwks.json", setA());
  JwksSpec spec;
  spec.file = dir.path() + "/jwks.json";
  spec.refresh = 1h;  // checks every second; the unknown kid must not wait for that
  spec.min_refetch = 1h;
  const auto source = JwksSources::instance().get(spec);
  ASSERT_TRUE(hasKid(*source, "a"));
  dir.write("jwks.json", setAB());
  source->onUnknownKid();
  EXPECT_TRUE(eventually([&] { return hasKid(*source, "b"); }, 900ms));
  EXPECT_EQ(source->unknownKidRefetches(), 1u);
}

TEST(JwksSource, SourcesAreSharedPerSpecWhileHeld) {
  testing::TempDir dir;
  dir.write("jwks.json", setA());
  JwksSpec spec;
  spec.file = dir.path() + "/jwks.json";
  auto first = JwksSources::instance().get(spec);
  auto again = JwksSources::instance().get(spec);
  EXPECT_EQ(first, again);
  JwksSpec other = spec;
  other.min_refetch = 1s;
  auto different = JwksSources::instance().get(other);
  EXPECT_NE(first, different);
  std::weak_ptr<JwksSource> weak = first;
  first.reset();
  again.reset();
  EXPECT_TRUE(weak.expired());
  auto fresh = JwksSources::instance().get(spec);
  EXPECT_TRUE(hasKid(*fresh, "a"));
}

TEST(JwksSource, FetchesOverHttps) {
  JwksServer server;
  server.setBody(setA());
  const auto source = JwksSources::instance().get(uriSpec(server));
  ASSERT_TRUE(source->waitReady(5s)) << source->lastError();
  EXPECT_TRUE(hasKid(*source, "a"));
  EXPECT_EQ(server.requests(), 1u);
  EXPECT_EQ(source->fetchesOk(), 1u);
  EXPECT_EQ(source->lastError(), "");
}

TEST(JwksSource, ChecksTheServerNameAndReadsChunkedBodies) {
  JwksServer server;
  server.setBody(setAB());
  server.setChunked(true);
  auto spec = uriSpec(server);
  spec.uri = server.url("/jwks.json", "localhost");
  const auto source = JwksSources::instance().get(spec);
  ASSERT_TRUE(source->waitReady(5s)) << source->lastError();
  EXPECT_TRUE(hasKid(*source, "b"));
}

TEST(JwksSource, ACertificateForAnotherNameIsRefused) {
  JwksServer server({"jwks.other.test"}, {});
  server.setBody(setA());
  const auto source = JwksSources::instance().get(uriSpec(server));
  EXPECT_FALSE(source->waitReady(5s));
  EXPECT_NE(source->lastError().find("certificate"), std::string::npos) << source->lastError();
  EXPECT_GE(source->fetchesFailed(), 1u);
}

TEST(JwksSource, AServerSignedByAnotherCaIsRefused) {
  JwksServer server;
  server.setBody(setA());
  testing::TempDir other;
  testing::makeCa(other.path(), "other");
  auto spec = uriSpec(server);
  spec.ca_file = other.path() + "/other.crt";
  const auto source = JwksSources::instance().get(spec);
  EXPECT_FALSE(source->waitReady(5s));
  EXPECT_EQ(source->keys(), nullptr);
  EXPECT_NE(source->lastError().find("certificate verification failed"), std::string::npos) << source->lastError();
  EXPECT_GE(source->fetchesFailed(), 1u);
  EXPECT_EQ(source->fetchesOk(), 0u);
}

TEST(JwksSource, UnknownKidRefetchesAreRateLimited) {
  JwksServer server;
  server.setBody(setA());
  auto spec = uriSpec(server);
  const auto source = JwksSources::instance().get(spec);
  ASSERT_TRUE(source->waitReady(5s)) << source->lastError();
  ASSERT_FALSE(hasKid(*source, "b"));

  server.setBody(setAB());  // the issuer rotates
  source->onUnknownKid();
  source->onUnknownKid();
  EXPECT_TRUE(eventually([&] { return hasKid(*source, "b"); }));
  EXPECT_EQ(source->unknownKidRefetches(), 1u);
  EXPECT_EQ(server.requests(), 2u);
  source->onUnknownKid();
  EXPECT_EQ(source->unknownKidRefetches(), 1u);
}

TEST(JwksSource, AFailingServerKeepsTheLastGoodKeys) {
  JwksServer server;
  server.setBody(setA());
  auto spec = uriSpec(server);
  spec.refresh = 100ms;
  spec.timeout = 300ms;
  const auto source = JwksSources::instance().get(spec);
  ASSERT_TRUE(source->waitReady(5s)) << source->lastError();

  server.setMode(JwksServer::Mode::Fail500);
  EXPECT_TRUE(eventually([&] { return source->fetchesFailed() >= 2; }));
  EXPECT_TRUE(hasKid(*source, "a"));
  EXPECT_NE(source->lastError().find("HTTP status 500"), std::string::npos) << source->lastError();

  server.setMode(JwksServer::Mode::Hang);
  EXPECT_TRUE(eventually([&] { return source->lastError().find("timed out") != std::string::npos; }));
  EXPECT_TRUE(hasKid(*source, "a"));

  server.setBody(R"({"keys":"not a list"})");
  server.setMode(JwksServer::Mode::Serve);
  EXPECT_TRUE(eventually([&] { return source->lastError().find("not a JWKS") != std::string::npos; }));
  EXPECT_TRUE(hasKid(*source, "a"));

  server.setBody(std::string(kMaxJwksBytes + 10, ' '));
  EXPECT_TRUE(eventually([&] { return source->lastError().find("ended early") != std::string::npos ||
                                      source->lastError().find("body limit") != std::string::npos; }))
      << source->lastError();

  server.setBody(setAB());
  EXPECT_TRUE(eventually([&] { return hasKid(*source, "b"); }));
  EXPECT_EQ(source->lastError(), "");
}

TEST(JwksSource, NothingListeningIsAFailure) {
  int port;
  {
    JwksServer gone;
    port = gone.port();
  }
  JwksSpec spec;
  spec.uri = "https://127.0.0.1:" + std::to_string(port) + "/jwks.json";
  const auto source = JwksSources::instance().get(spec);
  EXPECT_FALSE(source->waitReady(5s));
  EXPECT_NE(source->lastError().find("connect"), std::string::npos) << source->lastError();
}

TEST(JwksSource, StopsPromptlyDuringAHungFetch) {
  JwksServer server;
  server.setMode(JwksServer::Mode::Hang);
  auto spec = uriSpec(server);
  spec.timeout = 60s;
  auto source = JwksSources::instance().get(spec);
  ASSERT_TRUE(eventually([&] { return server.requests() == 1; }));
  const auto start = std::chrono::steady_clock::now();
  source.reset();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
}

}  // namespace
}  // namespace infermesh::authn
