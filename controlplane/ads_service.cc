#include "controlplane/ads_service.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <optional>

#include "controlplane/iso_time.h"
#include "controlplane/stream_sync.h"
#include "proxy/common/json_string.h"
#include "xds/resource_types.h"
#include "xds/server_stream.h"

namespace infermesh::controlplane {

namespace dv1 = discovery::v1;
using common::appendJsonString;
using Clock = std::chrono::steady_clock;

namespace {

config::Labels labelsOf(const dv1::Node& node) { return {node.labels().begin(), node.labels().end()}; }

dv1::DiscoveryResponse toWire(const xds::PreparedResponse& p) {
  dv1::DiscoveryResponse r;
  r.ParseFromString(p.wire());
  return r;
}
const dv1::DeltaDiscoveryResponse& toWire(const dv1::DeltaDiscoveryResponse& r) { return r; }

template <typename Out>
const std::string& typeOf(const Out& o) { return o.type_url; }
const std::string& typeOf(const dv1::DeltaDiscoveryResponse& o) { return o.type_url(); }

// One stream's reactor. `Stream` is xds::SotwServerStream or
// xds::DeltaServerStream; the protocol rules live there.
template <typename Req, typename Resp, typename Stream>
class Reactor final : public grpc::ServerBidiReactor<Req, Resp>, public AdsStream {
 public:
  Reactor(AdsService& service, grpc::CallbackServerContext* context, const char* kind)
      : service_(service), peer_(context->peer()), since_(isoTime(std::chrono::system_clock::now())), kind_(kind) {
    this->StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      finish();
      return;
    }
    bool first = false;
    {
      std::lock_guard lock(mu_);
      if (!stream_) {
        node_ = request_.node();
        const NodeConfig config = service_.cache().configFor(labelsOf(node_));
        stream_.emplace(config.snapshot);
        sync_.onConfig(config);
        first = true;
      }
      onRequest(request_);
    }
    if (first) {
      service_.add(this);
      push();  // a config that changed between the snapshot and add()
    }
    this->StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    std::lock_guard lock(mu_);
    writing_ = false;
    queue_.pop_front();
    if (!ok) {
      finishLocked();
      return;
    }
    writeNext();
  }

  void OnDone() override {
    service_.remove(this);
    delete this;
  }

  void push() override {
    std::lock_guard lock(mu_);
    if (!stream_ || finished_) return;
    const NodeConfig config = service_.cache().configFor(labelsOf(node_));
    sync_.onConfig(config);
    enqueue(stream_->onSnapshot(config.snapshot));
  }

  std::string statusJson() const override {
    std::lock_guard lock(mu_);
    std::string out = "{\"id\":";
    appendJsonString(out, node_.id());
    out += ",\"stream\":\"" + std::string(kind_) + "\",\"labels\":{";
    bool first = true;
    for (const auto& [k, v] : node_.labels()) {
      if (!first) out += ',';
      first = false;
      appendJsonString(out, k);
      out += ':';
      appendJsonString(out, v);
    }
    out += "},\"peer\":";
    appendJsonString(out, peer_);
    out += ",\"connected_since\":\"" + since_ + "\"";
    // Judged against the config in force now, which a push may not have
    // brought to this stream yet (then the type shows as not sent).
    sync_.appendJson(out, service_.cache().configFor(labelsOf(node_)), Clock::now(),
                     std::chrono::system_clock::now());
    return out + "}";
  }

 private:
  static const std::string& versionOf(const xds::PreparedResponse& p) { return p.version; }
  static const std::string& versionOf(const dv1::DeltaDiscoveryResponse& r) { return r.system_version_info(); }
  static const std::string& nonceOf(const xds::PreparedResponse& p) { return p.nonce; }
  static const std::string& nonceOf(const dv1::DeltaDiscoveryResponse& r) { return r.nonce(); }
  // The version a first request says the proxy holds: SotW carries it;
  // delta carries per-resource versions only.
  static std::string reportedVersion(const dv1::DiscoveryRequest& r) { return r.version_info(); }
  static std::string reportedVersion(const dv1::DeltaDiscoveryRequest&) { return {}; }

  void onRequest(const Req& req) {
    const auto now = Clock::now();
    if (req.response_nonce().empty()) {
      auto out = stream_->onRequest(req);
      const bool sends = std::any_of(out.begin(), out.end(), [&](const auto& o) { return typeOf(o) == req.type_url(); });
      sync_.onSubscribe(req.type_url(), reportedVersion(req), !sends, now);
      enqueue(std::move(out));
      return;
    }
    countAnswer(req, now);
    enqueue(stream_->onRequest(req));
  }

  // ACK/NACK bookkeeping for metrics and status (the protocol rules are in
  // Stream; this only observes).
  void countAnswer(const Req& req, Clock::time_point now) {
    std::optional<std::string> error;
    if (req.has_error_detail()) error = req.error_detail().message();
    const auto answer = sync_.onAnswer(req.type_url(), req.response_nonce(), error, now);
    if (!answer) return;
    if (!answer->acked) {
      service_.metrics().nacks->Increment();
      spdlog::warn("{} NACKed {} version {}: {}", node_.id(), req.type_url(), answer->version, *error);
      return;
    }
    service_.metrics().acks->Increment();
    service_.metrics().push_to_ack->Observe(std::chrono::duration<double>(answer->since_sent).count());
  }

  template <typename Out>
  void enqueue(std::vector<Out> out) {
    for (auto& o : out) {
      sync_.onSent(typeOf(o), versionOf(o), nonceOf(o), Clock::now());
      queue_.push_back(toWire(o));
      service_.metrics().pushes->Increment();
    }
    writeNext();
  }

  void writeNext() {
    if (writing_ || finished_ || queue_.empty()) return;
    writing_ = true;
    this->StartWrite(&queue_.front());
  }

  void finish() {
    std::lock_guard lock(mu_);
    finishLocked();
  }
  void finishLocked() {
    if (finished_) return;
    finished_ = true;
    this->Finish(grpc::Status::OK);
  }

  AdsService& service_;
  const std::string peer_;
  const std::string since_;
  const char* kind_;
  mutable std::mutex mu_;
  Req request_;
  dv1::Node node_;
  std::optional<Stream> stream_;
  StreamSync sync_;
  std::deque<Resp> queue_;  // front is being written
  bool writing_ = false;
  bool finished_ = false;
};

}  // namespace

AdsService::AdsService(SnapshotCache& cache, prometheus::Registry& registry) : cache_(cache) {
  metrics_.connected = &prometheus::BuildGauge()
                            .Name("infermesh_control_connected_proxies")
                            .Help("Proxy streams connected now.")
                            .Register(registry)
                            .Add({});
  auto& counters = prometheus::BuildCounter()
                       .Name("infermesh_control_xds_responses_total")
                       .Help("xDS responses by what happened to them.")
                       .Register(registry);
  metrics_.pushes = &counters.Add({{"event", "sent"}});
  metrics_.acks = &counters.Add({{"event", "acked"}});
  metrics_.nacks = &counters.Add({{"event", "nacked"}});
  metrics_.push_to_ack = &prometheus::BuildHistogram()
                              .Name("infermesh_control_push_to_ack_seconds")
                              .Help("From sending a response to its ACK.")
                              .Register(registry)
                              .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.0025, 0.005, 0.01, 0.025,
                                                                               0.05, 0.1, 0.25, 0.5, 1, 2.5});
}

AdsService::~AdsService() = default;

grpc::ServerBidiReactor<dv1::DiscoveryRequest, dv1::DiscoveryResponse>* AdsService::StreamAggregatedResources(
    grpc::CallbackServerContext* context) {
  return new Reactor<dv1::DiscoveryRequest, dv1::DiscoveryResponse, xds::SotwServerStream>(*this, context, "sotw");
}

grpc::ServerBidiReactor<dv1::DeltaDiscoveryRequest, dv1::DeltaDiscoveryResponse>* AdsService::DeltaAggregatedResources(
    grpc::CallbackServerContext* context) {
  return new Reactor<dv1::DeltaDiscoveryRequest, dv1::DeltaDiscoveryResponse, xds::DeltaServerStream>(*this, context,
                                                                                                     "delta");
}

void AdsService::add(AdsStream* s) {
  std::lock_guard lock(mu_);
  streams_.insert(s);
  metrics_.connected->Set(static_cast<double>(streams_.size()));
}

void AdsService::remove(AdsStream* s) {
  std::lock_guard lock(mu_);
  streams_.erase(s);
  metrics_.connected->Set(static_cast<double>(streams_.size()));
}

void AdsService::pushAll() {
  std::lock_guard lock(mu_);
  for (auto* s : streams_) s->push();
}

std::string AdsService::streamsJson() const {
  std::lock_guard lock(mu_);
  std::string out = "[";
  for (auto* s : streams_) {
    if (out.size() > 1) out += ',';
    out += s->statusJson();
  }
  return out + "]";
}

std::size_t AdsService::streamCount() const {
  std::lock_guard lock(mu_);
  return streams_.size();
}

}  // namespace infermesh::controlplane
