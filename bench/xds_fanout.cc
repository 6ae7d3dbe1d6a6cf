// How long a YAML edit takes to reach N proxies: N lightweight ADS clients
// (the xds library's Subscription on gRPC streams, one channel each, as real
// proxies have) connect to infermesh-control; the tool then writes a route
// file and measures, per client, the time from the write to the ACK of the
// route response that carries it.
//   infermesh-xds-fanout --xds ADDR --config-dir DIR --clients N [--rounds R]
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "infermesh/discovery/v1/discovery.grpc.pb.h"
#include "xds/resource_types.h"
#include "xds/subscription.h"

namespace dv1 = infermesh::discovery::v1;
using Clock = std::chrono::steady_clock;

namespace {

struct Shared {
  std::mutex mu;
  std::condition_variable cv;
  std::string marker;          // route name the current round waits for
  Clock::time_point written;   // when the file was written
  std::vector<double> latencies_ms;
  int connected = 0;
  std::atomic<bool> stop{false};
};

void client(int id, const std::string& address, Shared& shared) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // own connection, like a separate proxy
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
  auto stub = dv1::AggregatedDiscoveryService::NewStub(channel);
  grpc::ClientContext ctx;
  auto stream = stub->StreamAggregatedResources(&ctx);
  dv1::Node node;
  node.set_id("bench-" + std::to_string(id));
  std::map<std::string, infermesh::xds::Subscription> subs;
  for (const auto& type : infermesh::xds::pushOrder()) {
    subs.emplace(type, infermesh::xds::Subscription(type, node));
    stream->Write(subs.at(type).initialRequest());
  }
  bool counted = false;
  std::string seen_marker;
  dv1::DiscoveryResponse resp;
  while (!shared.stop && stream->Read(&resp)) {
    auto it = subs.find(resp.type_url());
    if (it == subs.end()) continue;
    stream->Write(it->second.onResponse(resp, [](const dv1::DiscoveryResponse&) { return std::string(); }));
    const auto acked_at = Clock::now();
    std::lock_guard lock(shared.mu);
    if (!counted) {
      counted = true;
      ++shared.connected;
      shared.cv.notify_all();
    }
    if (resp.type_url() != infermesh::xds::kRouteType || shared.marker.empty() || seen_marker == shared.marker) continue;
    for (const auto& r : resp.resources())
      if (r.name() == shared.marker) {
        seen_marker = shared.marker;
        shared.latencies_ms.push_back(std::chrono::duration<double, std::milli>(acked_at - shared.written).count());
        shared.cv.notify_all();
      }
  }
  ctx.TryCancel();
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

}  // namespace

int main(int argc, char** argv) {
  std::string address, dir;
  int clients = 10, rounds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i], v = argv[i + 1];
    if (a == "--xds") address = v;
    else if (a == "--config-dir") dir = v;
    else if (a == "--clients") clients = std::stoi(v);
    else if (a == "--rounds") rounds = std::stoi(v);
  }
  if (address.empty() || dir.empty()) {
    std::fprintf(stderr, "usage: infermesh-xds-fanout --xds ADDR --config-dir DIR --clients N [--rounds R]\n");
    return 2;
  }
  Shared shared;
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) threads.emplace_back(client, i, address, std::ref(shared));
  {
    std::unique_lock lock(shared.mu);
    if (!shared.cv.wait_for(lock, std::chrono::seconds(60), [&] { return shared.connected == clients; })) {
      std::fprintf(stderr, "only %d of %d clients connected\n", shared.connected, clients);
      return 1;
    }
  }
  std::printf("connected %d\n", clients);
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // lets the caller read RSS
  std::vector<double> all;
  for (int round = 0; round < rounds; ++round) {
    const std::string marker = "marker-" + std::to_string(round);
    {
      std::lock_guard lock(shared.mu);
      shared.marker = marker;
      shared.latencies_ms.clear();
      shared.written = Clock::now();
    }
    {
      const std::string tmp = dir + "/.marker.tmp";
      std::ofstream(tmp) << "apiVersion: infermesh.io/v1\nkind: Route\nmetadata: {name: " << marker
                         << "}\nspec: {match: {headers: [{name: x-marker}]}, model: bench-model}\n";
      std::filesystem::rename(tmp, dir + "/marker.yaml");
    }
    std::unique_lock lock(shared.mu);
    if (!shared.cv.wait_for(lock, std::chrono::seconds(30),
                            [&] { return static_cast<int>(shared.latencies_ms.size()) == clients; })) {
      std::fprintf(stderr, "round %d: only %zu of %d clients got the change\n", round, shared.latencies_ms.size(),
                   clients);
      return 1;
    }
    all.insert(all.end(), shared.latencies_ms.begin(), shared.latencies_ms.end());
    lock.unlock();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  // The directory watcher debounces 25 ms: that is part of what is measured.
  std::printf("clients %d rounds %d p50_ms %.1f p99_ms %.1f max_ms %.1f\n", clients, rounds, percentile(all, 0.5),
              percentile(all, 0.99), percentile(all, 1.0));
  std::fflush(stdout);
  shared.stop = true;
  std::_Exit(0);  // streams block in Read; the process is done
}
