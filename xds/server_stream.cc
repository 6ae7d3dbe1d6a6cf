#include "xds/server_stream.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include "xds/resource_types.h"

namespace infermesh::xds {

namespace dv1 = discovery::v1;

std::string PreparedResponse::wire() const {
  // version_info (1), type_url (4) and nonce (5) appended to the shared
  // resources (2): equivalent to one DiscoveryResponse message.
  std::string out = *wire_resources;
  google::protobuf::io::StringOutputStream sink(&out);
  google::protobuf::io::CodedOutputStream coded(&sink);
  auto field = [&](int number, const std::string& value) {
    coded.WriteTag(static_cast<std::uint32_t>(number << 3 | 2));
    coded.WriteVarint32(static_cast<std::uint32_t>(value.size()));
    coded.WriteString(value);
  };
  field(1, version);
  field(4, type_url);
  field(5, nonce);
  coded.Trim();
  return out;
}

std::optional<PreparedResponse> SotwServerStream::maybeSend(const std::string& type_url) {
  TypeStatus& st = types_[type_url];
  if (!st.subscribed || !st.sent_nonce.empty()) return std::nullopt;  // one in flight at a time
  const TypedResources* typed = snapshot_ ? snapshot_->get(type_url) : nullptr;
  if (typed == nullptr) return std::nullopt;
  if (typed->version == st.sent_version) return std::nullopt;  // it has (or refused) this one
  PreparedResponse r{type_url, typed->version, std::to_string(++nonce_counter_), typed->wire_resources};
  st.sent_version = r.version;
  st.sent_nonce = r.nonce;
  return r;
}

std::vector<PreparedResponse> SotwServerStream::onRequest(const dv1::DiscoveryRequest& request) {
  std::vector<PreparedResponse> out;
  if (request.has_node()) node_ = request.node();
  if (!knownType(request.type_url())) return out;
  TypeStatus& st = types_[request.type_url()];
  if (request.response_nonce().empty()) {
    // A new subscription, or the first request after a reconnect: what the
    // proxy already has counts as sent and acknowledged.
    st.subscribed = true;
    st.sent_nonce.clear();
    st.sent_version = request.version_info();
    st.acked_version = request.version_info();
  } else if (request.response_nonce() != st.sent_nonce) {
    return out;  // stale: answers a response superseded meanwhile
  } else {
    st.sent_nonce.clear();
    if (request.has_error_detail()) {
      st.last_nack = request.error_detail();
      st.nacked_version = st.sent_version;  // not resent; the next snapshot version will be
    } else {
      st.acked_version = request.version_info();
      st.last_nack.reset();
    }
  }
  if (auto r = maybeSend(request.type_url())) out.push_back(std::move(*r));
  return out;
}

std::vector<PreparedResponse> SotwServerStream::onSnapshot(std::shared_ptr<const Snapshot> snapshot) {
  snapshot_ = std::move(snapshot);
  std::vector<PreparedResponse> out;
  for (const auto& type : pushOrder())
    if (auto r = maybeSend(type)) out.push_back(std::move(*r));
  return out;
}

std::optional<dv1::DeltaDiscoveryResponse> DeltaServerStream::diff(const std::string& type_url, State& st) {
  if (!st.started || !st.pending_nonce.empty()) return std::nullopt;
  const TypedResources* typed = snapshot_ ? snapshot_->get(type_url) : nullptr;
  if (typed == nullptr || typed->version == st.nacked_version) return std::nullopt;
  dv1::DeltaDiscoveryResponse resp;
  for (const auto& [name, r] : typed->by_name) {
    if (!st.wildcard && st.names.count(name) == 0) continue;
    auto k = st.known.find(name);
    if (k != st.known.end() && k->second == r.version()) continue;
    *resp.add_resources() = r;
  }
  for (const auto& [name, version] : st.known)
    if (typed->by_name.count(name) == 0) resp.add_removed_resources(name);
  if (resp.resources_size() == 0 && resp.removed_resources_size() == 0) return std::nullopt;
  // Assume the proxy takes it; a NACK restores what it had.
  st.known_before = st.known;
  for (const auto& r : resp.resources()) st.known[r.name()] = r.version();
  for (const auto& name : resp.removed_resources()) st.known.erase(name);
  resp.set_type_url(type_url);
  resp.set_system_version_info(typed->version);
  resp.set_nonce(std::to_string(++nonce_counter_));
  st.pending_nonce = resp.nonce();
  return resp;
}

std::vector<dv1::DeltaDiscoveryResponse> DeltaServerStream::onRequest(const dv1::DeltaDiscoveryRequest& request) {
  std::vector<dv1::DeltaDiscoveryResponse> out;
  if (!knownType(request.type_url())) return out;
  State& st = types_[request.type_url()];
  if (!st.started) {
    // The first request names what it wants (nothing named: everything)
    // and, after a reconnect, the versions the proxy already holds.
    st.started = true;
    st.wildcard = request.resource_names_subscribe_size() == 0;
    for (const auto& [name, version] : request.initial_resource_versions()) st.known[name] = version;
  } else if (!request.response_nonce().empty()) {
    if (request.response_nonce() != st.pending_nonce) return out;  // stale
    st.pending_nonce.clear();
    if (request.has_error_detail()) {
      st.last_nack = request.error_detail();
      st.known = st.known_before;
      st.nacked_version = snapshot_ ? snapshot_->version(request.type_url()) : std::string();
    } else {
      st.last_nack.reset();
    }
  }
  for (const auto& n : request.resource_names_subscribe()) {
    if (n == "*") st.wildcard = true;
    else st.names.insert(n);
  }
  for (const auto& n : request.resource_names_unsubscribe()) {
    if (n == "*") {
      st.wildcard = false;
    } else {
      st.names.erase(n);
      st.known.erase(n);  // the proxy drops it itself
    }
  }
  if (auto r = diff(request.type_url(), st)) out.push_back(std::move(*r));
  return out;
}

std::vector<dv1::DeltaDiscoveryResponse> DeltaServerStream::onSnapshot(std::shared_ptr<const Snapshot> snapshot) {
  snapshot_ = std::move(snapshot);
  std::vector<dv1::DeltaDiscoveryResponse> out;
  for (const auto& type : pushOrder()) {
    auto it = types_.find(type);
    if (it == types_.end()) continue;
    if (auto r = diff(type, it->second)) out.push_back(std::move(*r));
  }
  return out;
}

}  // namespace infermesh::xds
