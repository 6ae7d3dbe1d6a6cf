#include "xds/server_stream.h"

#include <gtest/gtest.h>

#include "tests/unit/xds/xds_test_util.h"
#include "xds/resource_types.h"
#include "xds/subscription.h"

namespace infermesh::xds {
namespace {

namespace dv1 = discovery::v1;
using testing::makeSnapshot;
const std::string kModels(kModelType), kRoutes(kRouteType);

dv1::DiscoveryResponse parse(const PreparedResponse& p) {
  dv1::DiscoveryResponse r;
  EXPECT_TRUE(r.ParseFromString(p.wire()));
  return r;
}

dv1::DiscoveryRequest request(const std::string& type, const std::string& version = "", const std::string& nonce = "") {
  dv1::DiscoveryRequest r;
  r.set_type_url(type);
  r.set_version_info(version);
  r.set_response_nonce(nonce);
  r.mutable_node()->set_id("proxy-1");
  return r;
}

TEST(SotwServerStream, SubscribeAckAndPushOnChange) {
  auto s1 = makeSnapshot({"m1"}, {{"r1", "m1"}});
  SotwServerStream stream(s1);
  auto out = stream.onRequest(request(kModels));
  ASSERT_EQ(out.size(), 1u);
  auto resp = parse(out[0]);
  EXPECT_EQ(resp.type_url(), kModels);
  EXPECT_EQ(resp.version_info(), s1->version(kModels));
  ASSERT_EQ(resp.resources_size(), 1);
  EXPECT_EQ(stream.node().id(), "proxy-1");

  // ACK: nothing more to send.
  EXPECT_TRUE(stream.onRequest(request(kModels, resp.version_info(), resp.nonce())).empty());
  EXPECT_EQ(stream.status().at(kModels).acked_version, s1->version(kModels));

  // A snapshot that changes only routes pushes nothing for models.
  EXPECT_TRUE(stream.onSnapshot(makeSnapshot({"m1"}, {{"r1", "m1"}, {"r2", "m1"}})).empty());
  // One that changes models does.
  out = stream.onSnapshot(makeSnapshot({"m1", "m2"}, {{"r1", "m1"}}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(parse(out[0]).resources_size(), 2);
}

TEST(SotwServerStream, OneResponseInFlightPerType) {
  SotwServerStream stream(makeSnapshot({"m1"}, {}));
  auto first = stream.onRequest(request(kModels));
  ASSERT_EQ(first.size(), 1u);
  // Two snapshots arrive before the ACK: nothing is sent meanwhile...
  EXPECT_TRUE(stream.onSnapshot(makeSnapshot({"m1", "m2"}, {})).empty());
  auto latest = makeSnapshot({"m1", "m2", "m3"}, {});
  EXPECT_TRUE(stream.onSnapshot(latest).empty());
  // ...and the ACK releases only the latest.
  auto next = stream.onRequest(request(kModels, first[0].version, first[0].nonce));
  ASSERT_EQ(next.size(), 1u);
  EXPECT_EQ(next[0].version, latest->version(kModels));
}

TEST(SotwServerStream, StaleNonceIsIgnored) {
  SotwServerStream stream(makeSnapshot({"m1"}, {}));
  auto first = stream.onRequest(request(kModels));
  auto out = stream.onRequest(request(kModels, first[0].version, first[0].nonce));
  auto second = stream.onSnapshot(makeSnapshot({"m2"}, {}));
  ASSERT_EQ(second.size(), 1u);
  // A late answer to the first response changes nothing.
  EXPECT_TRUE(stream.onRequest(request(kModels, first[0].version, first[0].nonce)).empty());
  EXPECT_EQ(stream.status().at(kModels).sent_nonce, second[0].nonce);
}

TEST(SotwServerStream, NackIsRecordedAndNotResentInALoop) {
  SotwServerStream stream(makeSnapshot({"m1"}, {}));
  auto first = stream.onRequest(request(kModels));
  stream.onRequest(request(kModels, first[0].version, first[0].nonce));
  auto bad = stream.onSnapshot(makeSnapshot({"m1", "bad"}, {}));
  ASSERT_EQ(bad.size(), 1u);
  auto nack = request(kModels, first[0].version, bad[0].nonce);
  nack.mutable_error_detail()->set_message("Model/bad: spec.endpoints: at least one endpoint is required");
  EXPECT_TRUE(stream.onRequest(nack).empty());  // no resend of the refused version
  const auto& st = stream.status().at(kModels);
  ASSERT_TRUE(st.last_nack);
  EXPECT_NE(st.last_nack->message().find("Model/bad"), std::string::npos);
  EXPECT_EQ(st.acked_version, first[0].version);
  // The next good version goes out and clears the NACK once ACKed.
  auto fixed = stream.onSnapshot(makeSnapshot({"m1", "good"}, {}));
  ASSERT_EQ(fixed.size(), 1u);
  stream.onRequest(request(kModels, fixed[0].version, fixed[0].nonce));
  EXPECT_FALSE(stream.status().at(kModels).last_nack);
}

TEST(SotwServerStream, ReconnectWithCurrentVersionGetsNothing) {
  auto snap = makeSnapshot({"m1"}, {});
  SotwServerStream fresh(snap);
  EXPECT_TRUE(fresh.onRequest(request(kModels, snap->version(kModels))).empty());
  EXPECT_EQ(fresh.onRequest(request(kRoutes, "old-version")).size(), 1u);
}

TEST(SotwServerStream, PushOrderPutsModelsBeforeRoutes) {
  SotwServerStream stream(makeSnapshot({"m1"}, {{"r1", "m1"}}));
  auto a = stream.onRequest(request(kRoutes));
  auto b = stream.onRequest(request(kModels));
  stream.onRequest(request(kRoutes, a[0].version, a[0].nonce));
  stream.onRequest(request(kModels, b[0].version, b[0].nonce));
  auto out = stream.onSnapshot(makeSnapshot({"m1", "m2"}, {{"r1", "m2"}}));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].type_url, kModels);
  EXPECT_EQ(out[1].type_url, kRoutes);
}

TEST(SotwServerStream, WithClientSubscription) {
  dv1::Node node;
  node.set_id("proxy-1");
  Subscription sub(kModels, node);
  SotwServerStream stream(makeSnapshot({"m1"}, {}));
  int applied = 0;
  auto apply_ok = [&](const dv1::DiscoveryResponse&) {
    ++applied;
    return std::string();
  };
  auto out = stream.onRequest(sub.initialRequest());
  auto ack = sub.onResponse(parse(out[0]), apply_ok);
  EXPECT_FALSE(ack.has_error_detail());
  EXPECT_TRUE(stream.onRequest(ack).empty());
  EXPECT_EQ(sub.acceptedVersion(), out[0].version);
  // The client refuses the next one: NACK with the last good version.
  out = stream.onSnapshot(makeSnapshot({"m1", "m2"}, {}));
  auto nack = sub.onResponse(parse(out[0]), [](const dv1::DiscoveryResponse&) { return std::string("invalid"); });
  EXPECT_TRUE(nack.has_error_detail());
  EXPECT_EQ(nack.version_info(), sub.acceptedVersion());
  EXPECT_TRUE(stream.onRequest(nack).empty());
  // Reconnect: a new server stream learns the client's version from the
  // initial request and sends the newer snapshot.
  SotwServerStream reconnected(makeSnapshot({"m1", "m2", "m3"}, {}));
  out = reconnected.onRequest(sub.initialRequest());
  ASSERT_EQ(out.size(), 1u);
  sub.onResponse(parse(out[0]), apply_ok);
  EXPECT_EQ(applied, 2);
}

TEST(DeltaServerStream, SubscribeUnsubscribeAndRemoval) {
  dv1::Node node;
  DeltaSubscription sub(kModels, node);
  DeltaServerStream stream(makeSnapshot({"m1", "m2", "m3"}, {}));
  auto ok = [](const std::map<std::string, dv1::Resource>&) { return std::string(); };

  auto out = stream.onRequest(sub.initialRequest({"m1", "m2"}));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].resources_size(), 2);  // m3 not subscribed
  EXPECT_TRUE(stream.onRequest(sub.onResponse(out[0], ok)).empty());
  EXPECT_EQ(sub.resources().size(), 2u);

  // Subscribing to m3 sends only m3.
  out = stream.onRequest(sub.subscribe({"m3"}, {}));
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].resources_size(), 1);
  EXPECT_EQ(out[0].resources(0).name(), "m3");
  stream.onRequest(sub.onResponse(out[0], ok));

  // Unsubscribing m1: the client drops it; nothing is sent.
  EXPECT_TRUE(stream.onRequest(sub.subscribe({}, {"m1"})).empty());
  EXPECT_EQ(sub.resources().count("m1"), 0u);

  // m2 disappears from the snapshot: removed_resources; m1's change is not sent.
  out = stream.onSnapshot(makeSnapshot({"m1", "m3"}, {}, "127.0.0.1:9100"));
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].removed_resources_size(), 1);
  EXPECT_EQ(out[0].removed_resources(0), "m2");
  ASSERT_EQ(out[0].resources_size(), 1);  // m3 changed endpoint
  EXPECT_EQ(out[0].resources(0).name(), "m3");
  stream.onRequest(sub.onResponse(out[0], ok));
  EXPECT_EQ(sub.resources().size(), 1u);
}

TEST(DeltaServerStream, NackRollsBackAndReconnectSendsOnlyChanges) {
  dv1::Node node;
  DeltaSubscription sub(kModels, node);
  DeltaServerStream stream(makeSnapshot({"m1", "m2"}, {}));
  auto ok = [](const std::map<std::string, dv1::Resource>&) { return std::string(); };
  auto out = stream.onRequest(sub.initialRequest());
  stream.onRequest(sub.onResponse(out[0], ok));

  out = stream.onSnapshot(makeSnapshot({"m1", "m2", "m3"}, {}));
  ASSERT_EQ(out.size(), 1u);
  auto nack = sub.onResponse(out[0], [](const std::map<std::string, dv1::Resource>&) { return std::string("no"); });
  ASSERT_TRUE(nack.has_error_detail());
  EXPECT_TRUE(stream.onRequest(nack).empty());  // not resent
  EXPECT_EQ(sub.resources().size(), 2u);        // client kept the old set

  // Stale nonce after a newer response: ignored.
  auto newer = stream.onSnapshot(makeSnapshot({"m1", "m2", "m4"}, {}));
  ASSERT_EQ(newer.size(), 1u);
  EXPECT_TRUE(stream.onRequest(nack).empty());
  stream.onRequest(sub.onResponse(newer[0], ok));
  EXPECT_EQ(sub.resources().size(), 3u);

  // Reconnect: the client reports its versions; only the difference comes.
  DeltaServerStream again(makeSnapshot({"m1", "m2", "m4", "m5"}, {}));
  out = again.onRequest(sub.initialRequest());
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(out[0].resources_size(), 1);
  EXPECT_EQ(out[0].resources(0).name(), "m5");
}

}  // namespace
}  // namespace infermesh::xds
