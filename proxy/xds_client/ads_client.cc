#include "proxy/xds_client/ads_client.h"

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "infermesh/discovery/v1/discovery.grpc.pb.h"
#include "xds/resource_types.h"

namespace infermesh::xds_client {

namespace dv1 = discovery::v1;

namespace {

template <typename Spec>
void unpackAll(const dv1::DiscoveryResponse& r, std::vector<config::Resource<Spec>>& out) {
  for (const auto& res : r.resources()) {
    config::Resource<Spec> item;
    item.name = res.name();
    // The YAML file and line the control plane read it from; an older
    // control plane does not say.
    item.file = res.source_file().empty() ? "control-plane" : res.source_file();
    item.line = res.source_line();
    if (res.resource().UnpackTo(&item.spec)) out.push_back(std::move(item));
  }
}

}  // namespace

config::Resources toResources(const std::map<std::string, dv1::DiscoveryResponse>& by_type) {
  config::Resources out;
  for (const auto& [type, r] : by_type) {
    if (type == xds::kModelType) unpackAll(r, out.models);
    else if (type == xds::kListenerType) unpackAll(r, out.listeners);
    else if (type == xds::kRouteType) unpackAll(r, out.routes);
    else if (type == xds::kTenantType) unpackAll(r, out.tenants);
    else if (type == xds::kPolicyType) unpackAll(r, out.policies);
  }
  return out;
}

AdsClient::AdsClient(std::string address, dv1::Node node, std::string cache_path, Apply apply)
    : address_(std::move(address)), node_(std::move(node)), cache_path_(std::move(cache_path)), apply_(std::move(apply)) {
  for (const auto& type : xds::pushOrder()) subscriptions_.emplace(type, xds::Subscription(type, node_));
}

AdsClient::~AdsClient() { stop(); }

void AdsClient::start() { thread_ = std::thread([this] { run(); }); }

void AdsClient::stop() {
  stopping_ = true;
  {
    std::lock_guard lock(mu_);
    if (context_) context_->TryCancel();
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::vector<dv1::DiscoveryRequest> AdsClient::onResponse(const dv1::DiscoveryResponse& response) {
  std::vector<dv1::DiscoveryRequest> out;
  const std::string& type = response.type_url();
  if (!xds::knownType(type)) return out;
  held_[type] = response;
  // Until every type has arrived once there is nothing whole to apply.
  for (const auto& t : xds::pushOrder())
    if (!held_.count(t) && !accepted_.count(t)) return out;
  auto candidate = accepted_;
  for (const auto& [t, r] : held_) candidate[t] = r;
  ApplyResult result = apply_(toResources(candidate));
  // ACK (new version + nonce) or NACK (last good version + nonce + error).
  auto answer = [&](const dv1::DiscoveryResponse& r, const std::string& error) {
    out.push_back(subscriptions_.at(r.type_url()).onResponse(r, [&](const dv1::DiscoveryResponse&) { return error; }));
  };
  if (result.errors.empty()) {
    for (const auto& [t, r] : held_) {
      answer(r, "");
      accepted_[t] = r;
    }
    held_.clear();
    writeCache();
  } else if (config::onlyDanglingReferences(result.errors)) {
    spdlog::info("xds: holding {} until the resources it refers to arrive", type);
  } else {
    const std::string error = config::joinErrors(result.errors);
    spdlog::error("xds: rejecting {} version {}:\n{}", type, response.version_info(), error);
    answer(response, error);
    held_.erase(type);
  }
  return out;
}

void AdsClient::writeCache() const {
  if (cache_path_.empty()) return;
  dv1::DeltaDiscoveryResponse all;
  for (const auto& [type, r] : accepted_) {
    for (const auto& res : r.resources()) *all.add_resources() = res;
    all.set_system_version_info(all.system_version_info() + type + "=" + r.version_info() + ";");
  }
  const std::string tmp = cache_path_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!all.SerializeToOstream(&out)) {
      spdlog::warn("xds: cannot write cache {}", tmp);
      return;
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, cache_path_, ec);
  if (ec) spdlog::warn("xds: cannot write cache {}: {}", cache_path_, ec.message());
}

bool AdsClient::loadCache(const std::string& path, config::Resources& out, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = "no cache at " + path;
    return false;
  }
  dv1::DeltaDiscoveryResponse all;
  if (!all.ParseFromIstream(&in)) {
    error = "cache " + path + " is not readable";
    return false;
  }
  std::map<std::string, dv1::DiscoveryResponse> by_type;
  for (const auto& res : all.resources()) *by_type[res.resource().type_url()].add_resources() = res;
  out = toResources(by_type);
  return true;
}

void AdsClient::run() {
  // One backoff governs reconnects: gRPC's own, between connection
  // attempts (its default grows to two minutes). Its jitter is +-20%, so a
  // 4 s step keeps every wait under the documented 5 s. Keepalive notices a
  // control plane that vanished.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 250);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 4000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  auto channel = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
  auto stub = dv1::AggregatedDiscoveryService::NewStub(channel);
  std::mt19937 rng(std::random_device{}());
  const auto initial_backoff = std::chrono::milliseconds(250);
  const auto max_backoff = std::chrono::milliseconds(5000);
  auto backoff = initial_backoff;
  while (!stopping_) {
    grpc::ClientContext ctx;
    // The stream waits for the channel to connect instead of failing at
    // once while gRPC sits out a backoff of its own; a wait of ours on top
    // of one of gRPC's is how reconnects overshot the cap.
    ctx.set_wait_for_ready(true);
    {
      std::lock_guard lock(mu_);
      context_ = &ctx;
    }
    if (stopping_) ctx.TryCancel();  // stop() may have looked before context_ was set
    grpc::experimental::ChannelResetConnectionBackoff(channel.get());
    auto stream = stub->StreamAggregatedResources(&ctx);
    bool ok = true;
    // The last accepted version survives reconnects: a control plane with
    // nothing newer sends nothing.
    for (const auto& type : xds::pushOrder()) ok = ok && stream->Write(subscriptions_.at(type).initialRequest());
    // The requests went out on an open stream: connected, whether or not
    // the control plane has anything to send.
    if (ok) {
      if (!connected_.exchange(true)) spdlog::info("xds: connected to {}", address_);
      backoff = initial_backoff;
    }
    dv1::DiscoveryResponse resp;
    while (ok && stream->Read(&resp)) {
      for (auto& req : onResponse(resp)) {
        if (!stream->Write(req)) {
          ok = false;
          break;
        }
      }
    }
    stream->WritesDone();
    grpc::Status status = stream->Finish();
    {
      std::lock_guard lock(mu_);
      context_ = nullptr;
    }
    if (connected_.exchange(false)) spdlog::warn("xds: stream to {} ended: {}", address_, status.error_message());
    held_.clear();
    if (stopping_) break;
    // Jittered exponential backoff, between half and all of the step, so
    // the whole wait stays within the cap. It paces a control plane that
    // accepts streams and ends them; one that is away is waited for above.
    std::uniform_int_distribution<long> jitter(backoff.count() / 2, backoff.count());
    std::unique_lock lock(mu_);
    wake_.wait_for(lock, std::chrono::milliseconds(jitter(rng)), [this] { return stopping_.load(); });
    backoff = std::min(backoff * 2, max_backoff);
  }
}

}  // namespace infermesh::xds_client
