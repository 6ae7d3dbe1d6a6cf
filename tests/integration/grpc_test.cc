// gRPC through the proxy with real gRPC++ clients and a gRPC model server
// built from the Open Inference Protocol's proto: unary ModelInfer, the
// streaming call, trailers, deadlines and the proxy's own errors as gRPC
// status.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <sstream>
#include <thread>

#include "inference/grpc_service.grpc.pb.h"
#include "tests/integration/proxy_fixture.h"

namespace infermesh::testing {
namespace {

using namespace std::chrono_literals;

class GrpcTest : public ProxyTest {
 protected:
  static void SetUpTestSuite() {
    ProxyTest::SetUpTestSuite();
    auto start = [](const std::string& name, std::vector<std::string> args) {
      std::vector<std::string> argv{bin_dir + "/bench/infermesh-mock-grpc-model", "--port", "0", "--name", name};
      argv.insert(argv.end(), args.begin(), args.end());
      Mock m;
      m.process = Process::start(argv, "/tmp/infermesh-test-grpc-" + name + ".log");
      m.port = portOf(m.process->waitForLine("listening "));
      return m;
    };
    grpc_fast = start("grpc-fast", {"--models", "resnet,bert", "--delay-ms", "5"});
    grpc_slow = start("grpc-slow", {"--models", "resnet,bert", "--delay-ms", "1500"});
    grpc_narrow = start("grpc-narrow", {"--models", "narrow", "--delay-ms", "300", "--max-streams", "2"});
  }
  static void TearDownTestSuite() {
    grpc_fast.process.reset();
    grpc_slow.process.reset();
    grpc_narrow.process.reset();
    ProxyTest::TearDownTestSuite();
  }

  void startGrpcProxy() {
    std::ostringstream y;
    y << "apiVersion: infermesh.io/v1\nkind: Listener\nmetadata: {name: main}\n"
      << "spec: {address: '127.0.0.1:0', protocol: http2, filters: [{name: router}]}\n---\n"
      << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: resnet}\n"
      << "spec: {protocol: open-inference, upstreamProtocol: http2, aliases: [classifier], endpoints: [{address: '"
      << grpc_fast.address() << "'}]}\n---\n"
      << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: bert}\n"
      << "spec: {protocol: open-inference, upstreamProtocol: http2, endpoints: [{address: '" << grpc_slow.address()
      << "'}]}\n---\n"
      << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: gone}\n"
      << "spec: {protocol: open-inference, upstreamProtocol: http2, connectTimeout: 300ms, "
      << "endpoints: [{address: '127.0.0.1:1'}]}\n---\n"
      << "apiVersion: infermesh.io/v1\nkind: Model\nmetadata: {name: narrow}\n"
      << "spec: {protocol: open-inference, upstreamProtocol: http2, endpoints: [{address: '" << grpc_narrow.address()
      << "'}]}\n---\n"
      << "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: oip}\n"
      << "spec: {match: {pathPrefix: /inference.GRPCInferenceService/}}\n";
    startProxy(y.str());
    channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
    stub = inference::GRPCInferenceService::NewStub(channel);
  }

  static inference::ModelInferRequest request(const std::string& model) {
    inference::ModelInferRequest req;
    req.set_model_name(model);
    req.set_id("req-1");
    auto* in = req.add_inputs();
    in->set_name("input0");
    in->set_datatype("FP32");
    in->add_shape(1);
    in->add_shape(3);
    for (float f : {0.5f, 1.5f, 2.5f}) in->mutable_contents()->add_fp32_contents(f);
    return req;
  }

  static inline Mock grpc_fast, grpc_slow, grpc_narrow;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<inference::GRPCInferenceService::Stub> stub;
};

std::string meta(const std::multimap<grpc::string_ref, grpc::string_ref>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

TEST_F(GrpcTest, UnaryModelInferWithHeadersAndTrailers) {
  startGrpcProxy();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  inference::ModelInferResponse res;
  auto status = stub->ModelInfer(&ctx, request("resnet"), &res);
  ASSERT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(res.model_name(), "resnet");
  ASSERT_EQ(res.outputs_size(), 1);
  EXPECT_EQ(res.outputs(0).name(), "echo_input0");
  EXPECT_EQ(res.outputs(0).contents().fp32_contents_size(), 3);
  EXPECT_EQ(meta(ctx.GetServerInitialMetadata(), "x-mock-server"), "grpc-fast");
  EXPECT_EQ(meta(ctx.GetServerInitialMetadata(), "x-infermesh-model"), "resnet");
  EXPECT_EQ(meta(ctx.GetServerTrailingMetadata(), "x-mock-trailer"), "ok");
  // An alias is rewritten inside the protobuf message for the backend.
  grpc::ClientContext ctx2;
  auto status2 = stub->ModelInfer(&ctx2, request("classifier"), &res);
  ASSERT_TRUE(status2.ok()) << status2.error_message();
  EXPECT_EQ(res.model_name(), "resnet");
  EXPECT_EQ(res.id(), "req-1");
  EXPECT_EQ(metricReaching("infermesh_http_requests_total", "route=\"oip\",model=\"resnet\",status_class=\"2xx\"", 2), 2);
}

TEST_F(GrpcTest, StreamingInferRelaysEveryResponseAndTheStatus) {
  startGrpcProxy();
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 10s);
  auto stream = stub->ModelStreamInfer(&ctx);
  ASSERT_TRUE(stream->Write(request("resnet")));
  stream->WritesDone();
  inference::ModelStreamInferResponse res;
  int n = 0;
  while (stream->Read(&res)) {
    EXPECT_EQ(res.infer_response().parameters().at("sequence").int64_param(), n);
    ++n;
  }
  auto status = stream->Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(n, 4);
  EXPECT_EQ(meta(ctx.GetServerTrailingMetadata(), "x-mock-trailer"), "ok");
}

TEST_F(GrpcTest, ProxyErrorsAreGrpcStatuses) {
  startGrpcProxy();
  inference::ModelInferResponse res;
  {
    grpc::ClientContext ctx;
    auto status = stub->ModelInfer(&ctx, request("no-such-model"), &res);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();
    EXPECT_NE(status.error_message().find("no-such-model"), std::string::npos);
  }
  {
    grpc::ClientContext ctx;
    auto status = stub->ModelInfer(&ctx, request("gone"), &res);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  }
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 300ms);
    auto status = stub->ModelInfer(&ctx, request("bert"), &res);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << status.error_message();
  }
  {
    // The proxy honours grpc-timeout itself (a client that does not cancel
    // at its deadline still gets DEADLINE_EXCEEDED, from the proxy).
    std::string message;
    request("bert").SerializeToString(&message);
    std::string framed(5, '\0');
    framed[1] = static_cast<char>(message.size() >> 24);
    framed[2] = static_cast<char>(message.size() >> 16);
    framed[3] = static_cast<char>(message.size() >> 8);
    framed[4] = static_cast<char>(message.size());
    dir.write("call.bin", framed + message);
    const auto started = std::chrono::steady_clock::now();
    const std::string cmd = "nghttp -v -H 'content-type: application/grpc' -H 'te: trailers' -H 'grpc-timeout: 200m' -d " +
                            dir.path() + "/call.bin http://127.0.0.1:" + std::to_string(port) +
                            "/inference.GRPCInferenceService/ModelInfer 2>&1";
    const std::string out = runCommand(cmd).out;
    EXPECT_NE(out.find("grpc-status: 4"), std::string::npos) << out;
    // Long before the backend's 1.5 s answer.
    EXPECT_LT(std::chrono::steady_clock::now() - started, 1200ms);
  }
  // The backend's own status passes through.
  {
    grpc::ClientContext ctx;
    inference::ModelInferRequest req = request("resnet");
    auto status = stub->ModelInfer(&ctx, req, &res);
    EXPECT_TRUE(status.ok());
  }
}

TEST_F(GrpcTest, UpstreamStreamLimitOpensMoreConnections) {
  startGrpcProxy();
  // The server takes 2 streams per connection; 6 concurrent calls need 3.
  std::vector<std::thread> calls;
  std::atomic<int> ok{0};
  for (int i = 0; i < 6; ++i)
    calls.emplace_back([&] {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 10s);
      inference::ModelInferResponse res;
      if (stub->ModelInfer(&ctx, request("narrow"), &res).ok()) ++ok;
    });
  for (auto& t : calls) t.join();
  EXPECT_EQ(ok, 6);
  EXPECT_GE(metric("infermesh_upstream_connections_opened_total"), 3);
}

}  // namespace
}  // namespace infermesh::testing
