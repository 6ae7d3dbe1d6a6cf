#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "infermesh/discovery/v1/discovery.grpc.pb.h"
#include "controlplane/snapshot_cache.h"

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
}  // namespace prometheus

namespace infermesh::controlplane {

// One connected proxy stream, as the service tracks it.
class AdsStream {
 public:
  virtual ~AdsStream() = default;
  // A new config is in the cache: send what changed for this node.
  virtual void push() = 0;
  // JSON object: id, labels, peer, connected since, and how far the proxy
  // is in sync (StreamSync::appendJson).
  virtual std::string statusJson() const = 0;
};

struct AdsMetrics {
  prometheus::Gauge* connected = nullptr;
  prometheus::Counter* pushes = nullptr;
  prometheus::Counter* acks = nullptr;
  prometheus::Counter* nacks = nullptr;
  prometheus::Histogram* push_to_ack = nullptr;
};

// The aggregated discovery service (SotW and delta) on gRPC's callback API:
// no thread per stream, so one core serves thousands of proxies; each
// stream has its own small lock and write queue, so a slow proxy delays
// only itself.
class AdsService final : public discovery::v1::AggregatedDiscoveryService::CallbackService {
 public:
  AdsService(SnapshotCache& cache, prometheus::Registry& registry);
  ~AdsService() override;

  grpc::ServerBidiReactor<discovery::v1::DiscoveryRequest, discovery::v1::DiscoveryResponse>*
  StreamAggregatedResources(grpc::CallbackServerContext* context) override;
  grpc::ServerBidiReactor<discovery::v1::DeltaDiscoveryRequest, discovery::v1::DeltaDiscoveryResponse>*
  DeltaAggregatedResources(grpc::CallbackServerContext* context) override;

  // After the cache changed: every stream sends what changed for it.
  void pushAll();
  std::string streamsJson() const;
  std::size_t streamCount() const;

  // Used by the streams.
  SnapshotCache& cache() { return cache_; }
  const AdsMetrics& metrics() const { return metrics_; }
  void add(AdsStream* s);
  void remove(AdsStream* s);

 private:
  SnapshotCache& cache_;
  AdsMetrics metrics_;
  mutable std::mutex mu_;  // guards streams_; held while pushing, so a stream is not deleted meanwhile
  std::set<AdsStream*> streams_;
};

}  // namespace infermesh::controlplane
