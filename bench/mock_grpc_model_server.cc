// A mock Open Inference Protocol (KServe v2 / Triton) model server over
// gRPC, for tests and benchmarks: ModelInfer echoes its inputs back as
// outputs; ModelStreamInfer answers each request with several responses
// spaced in time, as a decoupled (token-streaming) model does. Every call
// carries initial metadata `x-mock-server` and trailing metadata
// `x-mock-trailer`, so a proxy's header and trailer handling shows.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "bench/split_comma.h"
#include "inference/grpc_service.grpc.pb.h"

namespace {

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  std::string name = "mock-grpc";
  std::vector<std::string> models{"mock-model"};
  int responses = 4;   // per streamed request
  int delay_ms = 10;   // before each streamed response, and before a unary answer
  int max_streams = 0; // SETTINGS_MAX_CONCURRENT_STREAMS per connection; 0: gRPC's default
};

Options g_opt;
std::atomic<std::uint64_t> g_calls{0};

class Service final : public inference::GRPCInferenceService::Service {
 public:
  grpc::Status ServerLive(grpc::ServerContext* ctx, const inference::ServerLiveRequest*,
                          inference::ServerLiveResponse* res) override {
    decorate(ctx);
    res->set_live(true);
    return grpc::Status::OK;
  }
  grpc::Status ServerReady(grpc::ServerContext* ctx, const inference::ServerReadyRequest*,
                           inference::ServerReadyResponse* res) override {
    decorate(ctx);
    res->set_ready(true);
    return grpc::Status::OK;
  }
  grpc::Status ModelReady(grpc::ServerContext* ctx, const inference::ModelReadyRequest* req,
                          inference::ModelReadyResponse* res) override {
    decorate(ctx);
    res->set_ready(serves(req->name()));
    return grpc::Status::OK;
  }

  grpc::Status ModelInfer(grpc::ServerContext* ctx, const inference::ModelInferRequest* req,
                          inference::ModelInferResponse* res) override {
    ++g_calls;
    decorate(ctx);
    if (!serves(req->model_name()))
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "model " + req->model_name() + " is not served here");
    std::this_thread::sleep_for(std::chrono::milliseconds(g_opt.delay_ms));
    echo(*req, *res);
    return grpc::Status::OK;
  }

  grpc::Status ModelStreamInfer(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<inference::ModelStreamInferResponse, inference::ModelInferRequest>* stream) override {
    ++g_calls;
    decorate(ctx);
    inference::ModelInferRequest req;
    while (stream->Read(&req)) {
      if (!serves(req.model_name()))
        return grpc::Status(grpc::StatusCode::NOT_FOUND, "model " + req.model_name() + " is not served here");
      for (int i = 0; i < g_opt.responses; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(g_opt.delay_ms));
        inference::ModelStreamInferResponse out;
        echo(req, *out.mutable_infer_response());
        (*out.mutable_infer_response()->mutable_parameters())["sequence"].set_int64_param(i);
        if (!stream->Write(out)) return grpc::Status::CANCELLED;
      }
    }
    return grpc::Status::OK;
  }

 private:
  static bool serves(const std::string& model) {
    for (const auto& m : g_opt.models)
      if (m == model) return true;
    return false;
  }
  static void decorate(grpc::ServerContext* ctx) {
    ctx->AddInitialMetadata("x-mock-server", g_opt.name);
    ctx->AddTrailingMetadata("x-mock-trailer", "ok");
  }
  static void echo(const inference::ModelInferRequest& req, inference::ModelInferResponse& res) {
    res.set_model_name(req.model_name());
    res.set_model_version(req.model_version().empty() ? "1" : req.model_version());
    res.set_id(req.id());
    for (const auto& in : req.inputs()) {
      auto* out = res.add_outputs();
      out->set_name("echo_" + in.name());
      out->set_datatype(in.datatype());
      *out->mutable_shape() = in.shape();
      *out->mutable_contents() = in.contents();
    }
    *res.mutable_raw_output_contents() = req.raw_input_contents();
  }
};


}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr,
                   "usage: infermesh-mock-grpc-model [--host IP] [--port N] [--name NAME] [--models a,b]\n"
                   "       [--responses N] [--delay-ms N] [--max-streams N]\nPrints \"listening IP:PORT\" once ready.\n");
      return 2;
    }
    const std::string v = argv[++i];
    if (a == "--host") g_opt.host = v;
    else if (a == "--port") g_opt.port = std::stoi(v);
    else if (a == "--name") g_opt.name = v;
    else if (a == "--models") g_opt.models = infermesh::bench::splitComma(v);
    else if (a == "--responses") g_opt.responses = std::stoi(v);
    else if (a == "--delay-ms") g_opt.delay_ms = std::stoi(v);
    else if (a == "--max-streams") g_opt.max_streams = std::stoi(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  Service service;
  grpc::ServerBuilder builder;
  int bound = 0;
  builder.AddListeningPort(g_opt.host + ":" + std::to_string(g_opt.port), grpc::InsecureServerCredentials(), &bound);
  builder.RegisterService(&service);
  if (g_opt.max_streams > 0) builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, g_opt.max_streams);
  auto server = builder.BuildAndStart();
  if (!server || bound == 0) {
    std::fprintf(stderr, "cannot listen on %s:%d\n", g_opt.host.c_str(), g_opt.port);
    return 1;
  }
  std::printf("listening %s:%d\n", g_opt.host.c_str(), bound);
  std::fflush(stdout);
  server->Wait();
  return 0;
}
