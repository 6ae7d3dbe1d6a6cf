#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "infermesh/discovery/v1/discovery.pb.h"
#include "proxy/config/config_error.h"
#include "proxy/config/resources.h"
#include "xds/subscription.h"

namespace grpc {
class ClientContext;
}

namespace infermesh::xds_client {

// What applying a candidate config did.
struct ApplyResult {
  config::ConfigErrors errors;  // empty: applied
};

// The proxy's ADS client: one state-of-the-world stream to the control
// plane on its own thread, one subscription per resource type. Each
// response is combined with the other types' last accepted resources,
// validated and applied through `apply` (the same compile path as a file
// reload); then ACKed, or NACKed with the validation error while the old
// config keeps serving. A response that only refers to resources another
// type has not delivered yet is held (not NACKed) until they arrive. The
// last accepted config is written to `cache_path`. Reconnects with jittered
// exponential backoff.
class AdsClient {
 public:
  using Apply = std::function<ApplyResult(const config::Resources&)>;

  AdsClient(std::string address, discovery::v1::Node node, std::string cache_path, Apply apply);
  ~AdsClient();
  void start();
  void stop();
  bool connected() const { return connected_.load(); }

  // Reads a cache file written by a previous run.
  static bool loadCache(const std::string& path, config::Resources& out, std::string& error);

 private:
  void run();
  // Handles one response; returns the requests (ACK/NACK) to send.
  std::vector<discovery::v1::DiscoveryRequest> onResponse(const discovery::v1::DiscoveryResponse& response);
  void writeCache() const;

  const std::string address_;
  const discovery::v1::Node node_;
  const std::string cache_path_;
  Apply apply_;
  std::map<std::string, discovery::v1::DiscoveryResponse> accepted_;  // by type
  std::map<std::string, discovery::v1::DiscoveryResponse> held_;      // by type
  std::map<std::string, xds::Subscription> subscriptions_;  // by type
  std::atomic<bool> connected_{false};
  std::atomic<bool> stopping_{false};
  std::mutex mu_;  // guards context_ and the backoff wait
  std::condition_variable wake_;
  grpc::ClientContext* context_ = nullptr;
  std::thread thread_;
};

// Turns xDS resources (by type) into the loader's form, for compile().
config::Resources toResources(const std::map<std::string, discovery::v1::DiscoveryResponse>& by_type);

}  // namespace infermesh::xds_client
