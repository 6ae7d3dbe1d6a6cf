#include "proxy/server/request_guard.h"

#include <gtest/gtest.h>

#include "proxy/config/snapshot.h"
#include "proxy/stats/worker_stats.h"

namespace infermesh::proxy {
namespace {

using stats::DownstreamError;

struct Guard : ::testing::Test {
  config::ListenerConfig listener;
  stats::WorkerStats stats;
  filter::StreamContext ctx;

  void SetUp() override {
    ctx.listener = &listener;
    ctx.client_address = "10.0.0.5";
    ctx.request.method = "POST";
    ctx.request.target = "/v1/chat/completions";
    ctx.request.headers.add("host", "mesh");
    ctx.request.headers.add("X-Infermesh-Shadow", "1");
    ctx.request.headers.add("x-infermesh-capability", "code");
    ctx.request.headers.add("x-request-id", "abc");
  }
  std::uint64_t counted(DownstreamError e) const { return stats.downstream_errors[static_cast<std::size_t>(e)]; }
};

TEST_F(Guard, RemovesInternalHeadersFromUntrustedClients) {
  ASSERT_TRUE(guardRequest(ctx, stats));
  EXPECT_FALSE(ctx.request.headers.get("x-infermesh-shadow"));
  EXPECT_FALSE(ctx.request.headers.get("x-infermesh-capability"));
  EXPECT_TRUE(ctx.request.headers.get("x-request-id"));
  EXPECT_EQ(counted(DownstreamError::UntrustedHeader), 1u);
}

TEST_F(Guard, KeepsClientHeadersTheListenerAllows) {
  listener.client_headers = {"x-infermesh-capability"};
  ASSERT_TRUE(guardRequest(ctx, stats));
  EXPECT_FALSE(ctx.request.headers.get("x-infermesh-shadow"));
  EXPECT_EQ(ctx.request.headers.get("x-infermesh-capability"), "code");
}

TEST_F(Guard, TrustsNamedSourcesAndIdentities) {
  listener.trusted_sources = {*common::parseCidr("10.0.0.0/24")};
  ASSERT_TRUE(guardRequest(ctx, stats));
  EXPECT_TRUE(ctx.request.headers.get("x-infermesh-shadow"));
  EXPECT_EQ(counted(DownstreamError::UntrustedHeader), 0u);

  ctx.client_address = "10.0.1.5";
  listener.trusted_spiffe_ids = {"spiffe://mesh.local/ns/mesh/"};
  EXPECT_TRUE(trustedPeer(listener, ctx.client_address, "spiffe://mesh.local/ns/mesh/sa/sidecar"));
  EXPECT_FALSE(trustedPeer(listener, ctx.client_address, "spiffe://mesh.local/ns/mesh-evil/sa/x"));
  EXPECT_FALSE(trustedPeer(listener, ctx.client_address, ""));
}

TEST_F(Guard, NormalisesTheTargetBeforeFilters) {
  ctx.request.target = "/v1/chat/completions/../../%2e%2e/internal/reset?x=1";
  ASSERT_TRUE(guardRequest(ctx, stats));
  EXPECT_EQ(ctx.request.target, "/internal/reset?x=1");
}

TEST_F(Guard, AbsoluteFormReplacesHost) {
  ctx.request.target = "http://other:9000/v1/models";
  ASSERT_TRUE(guardRequest(ctx, stats));
  EXPECT_EQ(ctx.request.target, "/v1/models");
  EXPECT_EQ(ctx.request.headers.get("host"), "other:9000");
}

TEST_F(Guard, RefusesBadTargetsWithA400) {
  ctx.request.target = "/v1/%2F..%2Finternal";
  EXPECT_FALSE(guardRequest(ctx, stats));
  ASSERT_TRUE(ctx.local_reply);
  EXPECT_EQ(ctx.local_reply->status, 400u);
  EXPECT_EQ(ctx.local_reply->code, "bad_path");
  EXPECT_EQ(counted(DownstreamError::BadPath), 1u);
  EXPECT_EQ(ctx.request.target, "/v1/%2F..%2Finternal");  // logged as received
}

}  // namespace
}  // namespace infermesh::proxy
