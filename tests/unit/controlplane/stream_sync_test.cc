#include "controlplane/stream_sync.h"

#include <gtest/gtest.h>

#include "tests/unit/xds/xds_test_util.h"
#include "xds/resource_types.h"

namespace infermesh::controlplane {
namespace {

using namespace std::chrono_literals;
using xds::testing::makeSnapshot;
using Clock = StreamSync::Clock;
const std::string kModels(xds::kModelType), kRoutes(xds::kRouteType);

NodeConfig config(std::uint64_t version, const std::vector<std::string>& models,
                  const std::vector<std::pair<std::string, std::string>>& routes = {}) {
  return {makeSnapshot(models, routes), version};
}

// A stream where every type was sent from `c` and ACKed, as after a first
// connection.
StreamSync syncedAt(const NodeConfig& c, Clock::time_point now) {
  StreamSync s;
  s.onConfig(c);
  int nonce = 0;
  for (const auto& type : xds::pushOrder()) {
    s.onSubscribe(type, "", false, now);
    s.onSent(type, c.snapshot->version(type), std::to_string(++nonce), now);
    EXPECT_TRUE(s.onAnswer(type, std::to_string(nonce), std::nullopt, now));
  }
  return s;
}

TEST(StreamSync, AckedEverywhereIsSyncedAtTheConfigVersion) {
  const auto now = Clock::now();
  const NodeConfig v1 = config(1, {"m1"}, {{"r1", "m1"}});
  StreamSync s = syncedAt(v1, now);
  for (const auto& type : xds::pushOrder()) EXPECT_EQ(s.state(type, v1), SyncState::kSynced) << type;
  EXPECT_EQ(s.configVersion(v1), 1u);
}

TEST(StreamSync, UnchangedTypesFollowTheNewVersionChangedOnesWaitForTheirAck) {
  const auto now = Clock::now();
  StreamSync s = syncedAt(config(1, {"m1"}, {{"r1", "m1"}}), now);
  // Version 2 changes routes only.
  const NodeConfig v2 = config(2, {"m1"}, {{"r1", "m1"}, {"r2", "m1"}});
  s.onConfig(v2);
  EXPECT_EQ(s.state(kModels, v2), SyncState::kSynced);
  EXPECT_EQ(s.state(kRoutes, v2), SyncState::kNotSent);  // the stream has not sent it yet
  s.onSent(kRoutes, v2.snapshot->version(kRoutes), "9", now);
  EXPECT_EQ(s.state(kRoutes, v2), SyncState::kStale);
  EXPECT_EQ(s.configVersion(v2), 1u);  // its routes are still version 1's

  EXPECT_FALSE(s.onAnswer(kRoutes, "8", std::nullopt, now)) << "a stale nonce is no answer";
  EXPECT_EQ(s.state(kRoutes, v2), SyncState::kStale);
  const auto a = s.onAnswer(kRoutes, "9", std::nullopt, now + 5ms);
  ASSERT_TRUE(a);
  EXPECT_TRUE(a->acked);
  EXPECT_EQ(a->since_sent, 5ms);
  EXPECT_EQ(s.state(kRoutes, v2), SyncState::kSynced);
  EXPECT_EQ(s.configVersion(v2), 2u);
}

TEST(StreamSync, NackIsShownUntilAVersionIsAcked) {
  const auto now = Clock::now();
  StreamSync s = syncedAt(config(1, {"m1"}), now);
  const NodeConfig v2 = config(2, {"m1", "m2"});
  s.onConfig(v2);
  s.onSent(kModels, v2.snapshot->version(kModels), "9", now);
  const auto a = s.onAnswer(kModels, "9", std::string("endpoint m2: bad address"), now);
  ASSERT_TRUE(a);
  EXPECT_FALSE(a->acked);
  EXPECT_EQ(s.state(kModels, v2), SyncState::kNacked);
  EXPECT_EQ(s.configVersion(v2), 1u);
  std::string json;
  s.appendJson(json, v2, now, std::chrono::system_clock::now());
  EXPECT_NE(json.find("\"Model\":{\"state\":\"NACKED\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"last_nack\":\"endpoint m2: bad address\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"nacked_config_version\":2"), std::string::npos) << json;
  EXPECT_NE(json.find("\"config_version\":1,\"synced\":false"), std::string::npos) << json;

  // A fix goes out and is taken.
  const NodeConfig v3 = config(3, {"m1", "m3"});
  s.onConfig(v3);
  s.onSent(kModels, v3.snapshot->version(kModels), "10", now);
  EXPECT_EQ(s.state(kModels, v3), SyncState::kStale);
  ASSERT_TRUE(s.onAnswer(kModels, "10", std::nullopt, now));
  EXPECT_EQ(s.state(kModels, v3), SyncState::kSynced);
  EXPECT_EQ(s.configVersion(v3), 3u);
}

TEST(StreamSync, HoldingTheCurrentVersionWhileAnOlderIsInFlightIsStale) {
  const auto now = Clock::now();
  const NodeConfig v1 = config(1, {"m1"});
  StreamSync s = syncedAt(v1, now);
  const NodeConfig v2 = config(2, {"m1", "m2"});
  s.onConfig(v2);
  s.onSent(kModels, v2.snapshot->version(kModels), "9", now);
  // Version 3 reverts to version 1's models before the ACK.
  const NodeConfig v3 = config(3, {"m1"});
  s.onConfig(v3);
  EXPECT_EQ(s.state(kModels, v3), SyncState::kStale);
}

TEST(StreamSync, ReconnectedProxyIsSyncedWhenItHoldsTheCurrentVersion) {
  const auto now = Clock::now();
  const NodeConfig v4 = config(4, {"m1"});
  StreamSync up_to_date;
  up_to_date.onConfig(v4);
  for (const auto& type : xds::pushOrder()) up_to_date.onSubscribe(type, v4.snapshot->version(type), true, now);
  EXPECT_EQ(up_to_date.configVersion(v4), 4u);

  // It holds models from before this control plane started: no number.
  StreamSync behind;
  behind.onConfig(v4);
  for (const auto& type : xds::pushOrder())
    behind.onSubscribe(type, type == kModels ? "0123456789abcdef" : v4.snapshot->version(type), type != kModels, now);
  EXPECT_EQ(behind.state(kModels, v4), SyncState::kNotSent);
  EXPECT_EQ(behind.configVersion(v4), 0u);
  std::string json;
  behind.appendJson(json, v4, now, std::chrono::system_clock::now());
  EXPECT_NE(json.find("\"config_version\":null"), std::string::npos) << json;
}

TEST(StreamSync, NothingIsSentWithoutAConfig) {
  StreamSync s;
  s.onConfig({});
  s.onSubscribe(kModels, "", true, Clock::now());
  EXPECT_EQ(s.state(kModels, {}), SyncState::kNotSent);
  std::string json;
  s.appendJson(json, {}, Clock::now(), std::chrono::system_clock::now());
  EXPECT_NE(json.find("\"last_ack\":null,\"last_ack_age_seconds\":null"), std::string::npos) << json;
  EXPECT_NE(json.find("\"Policy\":{\"state\":\"NOT SENT\""), std::string::npos) << json;
}

TEST(StreamSync, LastAckIsTheNewestOfAnyType) {
  const auto then = Clock::now();
  const NodeConfig v1 = config(1, {"m1"});
  StreamSync s = syncedAt(v1, then);
  const NodeConfig v2 = config(2, {"m1", "m2"});
  s.onConfig(v2);
  s.onSent(kModels, v2.snapshot->version(kModels), "9", then + 10s);
  ASSERT_TRUE(s.onAnswer(kModels, "9", std::nullopt, then + 30s));
  std::string json;
  s.appendJson(json, v2, then + 33s, std::chrono::system_clock::now());
  EXPECT_NE(json.find("\"synced\":true,\"last_ack\":\"20"), std::string::npos) << json;
  EXPECT_NE(json.find("\"last_ack_age_seconds\":3,\"types\""), std::string::npos) << json;
}

}  // namespace
}  // namespace infermesh::controlplane
