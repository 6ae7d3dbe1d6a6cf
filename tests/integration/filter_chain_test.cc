// The filter API end to end: a chain of several filters in the real proxy
// (with the test-only filters of test_filters.cc) over HTTP/1.1, HTTP/2 and
// gRPC: a response filter that rewrites SSE events, one that stops and
// resumes from a timer, headers from the stream context, a local streamed
// reply set per route, per-route overrides, and trailers seen by filters.
#include <grpcpp/grpcpp.h>

#include "inference/grpc_service.grpc.pb.h"
#include "tests/integration/proxy_fixture.h"

namespace infermesh::testing {
namespace {

using namespace std::chrono_literals;

int count(const std::string& s, const std::string& what) {
  int n = 0;
  for (auto at = s.find(what); at != std::string::npos; at = s.find(what, at + what.size())) ++n;
  return n;
}

class FilterChainTest : public ProxyTest {
 protected:
  void SetUp() override { proxy_binary = "/tests/infermesh-proxy-test-filters"; }

  void start(const std::string& extra = "") {
    startProxy(
        "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec:\n"
        "  address: 127.0.0.1:0\n  protocol: auto\n"
        "  filters:\n"
        "    - {name: test_sse_rewrite}\n"
        "    - {name: test_pause, config: {ms: 30}}\n"
        "    - {name: headers, config: {response: {set: {x-served-model: '%MODEL%', x-route: '%ROUTE%'}}}}\n"
        "    - {name: direct_response}\n"
        "    - {name: router}\n" +
        doc("Model", "chat-model", "{endpoints: [{address: '" + fast_a.address() + "'}]}") +
        doc("Route", "canned", "{order: 3, match: {pathPrefix: /v1/canned}, model: chat-model, filters: ["
                               "{name: direct_response, config: {status: 200, events: ['{\"n\":1}', '{\"n\":2}', '[DONE]']}}]}") +
        doc("Route", "models", "{order: 3, match: {pathExact: /v1/models}, filters: ["
                               "{name: direct_response, config: {status: 200, body: '{\"object\":\"list\",\"data\":[]}'}}]}") +
        doc("Route", "plain", "{order: 2, match: {pathPrefix: /v1/, headers: [{name: x-case, value: plain}]}, filters: ["
                              "{name: test_sse_rewrite, disabled: true}, {name: test_pause, disabled: true}]}") +
        doc("Route", "api", "{match: {pathPrefix: /v1/}}") + extra);
  }
  std::string h2(const std::string& path, const std::string& args = "") {
    dir.write("body.json", chatBody("chat-model", true));
    return runCommand("curl -sSN --max-time 10 --http2-prior-knowledge -D - " + args + " --data-binary @" + dir.path() +
                      "/body.json http://127.0.0.1:" + std::to_string(port) + path)
        .out;
  }
  // Every data event of an SSE body is preceded by its ": event N" comment.
  static void expectRewritten(const std::string& body) {
    const int events = count(body, "data: ");
    EXPECT_GT(events, 1) << body;
    EXPECT_EQ(count(body, ": event "), events) << body;
    EXPECT_NE(body.find(": event 1\ndata: "), std::string::npos) << body;
    EXPECT_NE(body.find(": event " + std::to_string(events) + "\ndata: [DONE]\n\n"), std::string::npos) << body;
  }
};

TEST_F(FilterChainTest, AChainRewritesEventsPausesOnTimersAndAddsContextHeaders) {
  start();
  auto r = httpRequest(port, "POST", "/v1/chat/completions", chatBody("chat-model", true));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(r.complete);
  expectRewritten(r.body);
  // Both heads were held until a timer on the worker resumed them.
  EXPECT_EQ(r.headers["x-test-paused"], "request,response");
  EXPECT_EQ(r.headers["x-served-model"], "chat-model");
  EXPECT_EQ(r.headers["x-route"], "api");
  // The same chain over HTTP/2.
  const auto out = h2("/v1/chat/completions");
  EXPECT_NE(out.find("HTTP/2 200"), std::string::npos) << out;
  EXPECT_NE(out.find("x-test-paused: request,response"), std::string::npos) << out;
  expectRewritten(out.substr(out.find("\r\n\r\n")));
}

TEST_F(FilterChainTest, ARouteAnswersLocallyWithAStreamThatResponseFiltersSee) {
  start();
  const int before = mockStat(fast_a, "requests");
  auto r = httpRequest(port, "POST", "/v1/canned", chatBody("chat-model", true));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.headers["content-type"], "text/event-stream");
  EXPECT_EQ(r.body, ": event 1\ndata: {\"n\":1}\n\n: event 2\ndata: {\"n\":2}\n\n: event 3\ndata: [DONE]\n\n");
  EXPECT_EQ(r.headers["x-route"], "canned");
  const auto out = h2("/v1/canned");
  EXPECT_NE(out.find(": event 3\ndata: [DONE]\n\n"), std::string::npos) << out;
  // A route that names no model still gets its filters: a canned answer
  // where resolution alone would have said "missing model".
  auto models = httpRequest(port, "GET", "/v1/models");
  EXPECT_EQ(models.status, 200) << models.body;
  EXPECT_EQ(models.body, "{\"object\":\"list\",\"data\":[]}");
  EXPECT_EQ(mockStat(fast_a, "requests"), before);
  // Counted in a metric the filter declared, summed over the workers.
  EXPECT_EQ(metric("infermesh_direct_responses_total", "status=\"200\""), 3);
}

TEST_F(FilterChainTest, ARouteTurnsFiltersOff) {
  start();
  auto r = httpRequest(port, "POST", "/v1/chat/completions", chatBody("chat-model", true), {{"x-case", "plain"}});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(count(r.body, ": event "), 0) << r.body;
  EXPECT_GT(count(r.body, "data: "), 1);
  EXPECT_EQ(r.headers.count("x-test-paused"), 0u);
  EXPECT_EQ(r.headers["x-route"], "plain");  // headers still runs
}

TEST_F(FilterChainTest, BadFilterConfigNamesTheField) {
  dir.write("config.yaml",
            "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec:\n  address: 127.0.0.1:0\n"
            "  filters:\n    - {name: headers, config: {response: {set: {x-a: '%NOPE%'}}}}\n    - {name: router}\n");
  auto r = runCommand(bin_dir + "/controlplane/infermeshctl validate " + dir.path() + " 2>&1");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.out.find("spec.filters[0].config"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("response.set.x-a: unknown variable %NOPE%"), std::string::npos) << r.out;
}

TEST_F(FilterChainTest, GrpcTrailersReachResponseFiltersAfterTheBodyEnds) {
  Mock grpc;
  grpc.process = Process::start({bin_dir + "/bench/infermesh-mock-grpc-model", "--port", "0", "--name", "grpc-chain",
                                 "--models", "resnet"},
                                "/tmp/infermesh-test-grpc-chain.log");
  grpc.port = portOf(grpc.process->waitForLine("listening "));
  ASSERT_GT(grpc.port, 0);
  startProxy("apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\nspec:\n"
             "  address: 127.0.0.1:0\n  protocol: http2\n  filters: [{name: test_trailers}, {name: router}]\n" +
             doc("Model", "resnet", "{protocol: open-inference, upstreamProtocol: http2, endpoints: [{address: '" +
                                        grpc.address() + "'}]}") +
             doc("Route", "oip", "{match: {pathPrefix: /inference.GRPCInferenceService/}}"));
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  auto stub = inference::GRPCInferenceService::NewStub(channel);
  inference::ModelInferRequest req;
  req.set_model_name("resnet");
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  inference::ModelInferResponse res;
  auto status = stub->ModelInfer(&ctx, req, &res);
  ASSERT_TRUE(status.ok()) << status.error_message();
  const auto& trailers = ctx.GetServerTrailingMetadata();
  auto it = trailers.find("x-test-trailer");
  ASSERT_NE(it, trailers.end());
  EXPECT_EQ(std::string(it->second.data(), it->second.size()), "grpc-status=0;ended");
}

}  // namespace
}  // namespace infermesh::testing
