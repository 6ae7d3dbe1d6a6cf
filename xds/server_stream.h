#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "infermesh/discovery/v1/discovery.pb.h"
#include "xds/snapshot.h"

namespace infermesh::xds {

// A response ready to send: the resources serialised once per snapshot and
// type (shared by every stream), plus this stream's version and nonce.
struct PreparedResponse {
  std::string type_url;
  std::string version;
  std::string nonce;
  std::shared_ptr<const std::string> wire_resources;
  // The DiscoveryResponse on the wire: shared bytes + per-stream fields
  // (protobuf messages may be concatenated field by field).
  std::string wire() const;
};

// What the server knows about one type on one stream.
struct TypeStatus {
  bool subscribed = false;
  std::string sent_version;  // last version sent
  std::string sent_nonce;    // nonce of the response awaiting ACK/NACK ("" if none)
  std::string acked_version;
  std::optional<discovery::v1::ErrorDetail> last_nack;
  std::string nacked_version;  // the version the NACK refused
};

// The server half of one state-of-the-world ADS stream, without gRPC: feed
// it requests and snapshots, send what it returns. Follows the xDS rules:
// one response in flight per type (the next waits for its ACK/NACK); a stale
// nonce is ignored; a NACK is recorded and the refused version is not sent
// again; a reconnecting proxy that already has the current version gets
// nothing.
class SotwServerStream {
 public:
  explicit SotwServerStream(std::shared_ptr<const Snapshot> snapshot) : snapshot_(std::move(snapshot)) {}

  std::vector<PreparedResponse> onRequest(const discovery::v1::DiscoveryRequest& request);
  std::vector<PreparedResponse> onSnapshot(std::shared_ptr<const Snapshot> snapshot);

  const std::map<std::string, TypeStatus>& status() const { return types_; }
  const discovery::v1::Node& node() const { return node_; }

 private:
  std::optional<PreparedResponse> maybeSend(const std::string& type_url);

  std::shared_ptr<const Snapshot> snapshot_;
  std::map<std::string, TypeStatus> types_;
  discovery::v1::Node node_;
  std::uint64_t nonce_counter_ = 0;
};

// The server half of one delta ADS stream: per type, the names the proxy
// subscribed to (none named = all) and the resource versions it has.
class DeltaServerStream {
 public:
  explicit DeltaServerStream(std::shared_ptr<const Snapshot> snapshot) : snapshot_(std::move(snapshot)) {}

  std::vector<discovery::v1::DeltaDiscoveryResponse> onRequest(const discovery::v1::DeltaDiscoveryRequest& request);
  std::vector<discovery::v1::DeltaDiscoveryResponse> onSnapshot(std::shared_ptr<const Snapshot> snapshot);

 private:
  struct State {
    bool started = false;
    bool wildcard = false;
    std::set<std::string> names;
    std::map<std::string, std::string> known;  // name -> version the proxy has
    std::map<std::string, std::string> known_before;  // to roll back on NACK
    std::string pending_nonce;
    std::string nacked_version;  // snapshot type version the proxy refused
    std::optional<discovery::v1::ErrorDetail> last_nack;
  };
  std::optional<discovery::v1::DeltaDiscoveryResponse> diff(const std::string& type_url, State& st);

  std::shared_ptr<const Snapshot> snapshot_;
  std::map<std::string, State> types_;
  std::uint64_t nonce_counter_ = 0;
};

}  // namespace infermesh::xds
