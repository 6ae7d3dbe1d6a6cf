#include "controlplane/stream_sync.h"

#include <algorithm>

#include "controlplane/iso_time.h"
#include "proxy/common/json_string.h"
#include "xds/resource_types.h"

namespace infermesh::controlplane {

using common::appendJsonString;

namespace {

std::string currentVersion(const NodeConfig& c, const std::string& type_url) {
  return c.snapshot ? c.snapshot->version(type_url) : std::string();
}

void appendNumberOrNull(std::string& out, std::uint64_t n) { out += n == 0 ? "null" : std::to_string(n); }

}  // namespace

std::string_view stateName(SyncState s) {
  switch (s) {
    case SyncState::kSynced: return "SYNCED";
    case SyncState::kStale: return "STALE";
    case SyncState::kNacked: return "NACKED";
    case SyncState::kNotSent: return "NOT SENT";
  }
  return "?";
}

const StreamSync::Type* StreamSync::find(const std::string& type_url) const {
  auto it = types_.find(type_url);
  return it == types_.end() ? nullptr : &it->second;
}

void StreamSync::onConfig(const NodeConfig& config) {
  latest_ = config;
  if (!config.snapshot) return;
  // A type whose content did not change is not resent: what the proxy holds
  // is this version's too.
  for (auto& [type_url, t] : types_)
    if (!t.acked_version.empty() && t.acked_version == config.snapshot->version(type_url))
      t.acked_config = std::max(t.acked_config, config.version);
}

void StreamSync::onSubscribe(const std::string& type_url, const std::string& reported, bool up_to_date,
                             Clock::time_point now) {
  if (!xds::knownType(type_url)) return;
  Type& t = types_[type_url];
  if (t.subscribed) return;
  t.subscribed = true;
  const std::string current = currentVersion(latest_, type_url);
  t.acked_version = up_to_date && !current.empty() ? current : reported;
  // Content from an earlier run of the control plane has no number here.
  t.acked_config = !t.acked_version.empty() && t.acked_version == current ? latest_.version : 0;
  if (!t.acked_version.empty()) t.acked_at = now;
}

void StreamSync::onSent(const std::string& type_url, const std::string& version, const std::string& nonce,
                        Clock::time_point now) {
  Type& t = types_[type_url];
  t.sent_version = version;
  t.sent_nonce = nonce;
  t.sent_config = latest_.version;
  t.sent_at = now;
}

std::optional<StreamSync::Answer> StreamSync::onAnswer(const std::string& type_url, const std::string& nonce,
                                                       const std::optional<std::string>& error,
                                                       Clock::time_point now) {
  auto it = types_.find(type_url);
  if (it == types_.end() || nonce.empty() || nonce != it->second.sent_nonce) return std::nullopt;
  Type& t = it->second;
  t.sent_nonce.clear();
  Answer a{!error.has_value(), t.sent_version, now - t.sent_at};
  if (error) {
    t.last_nack = *error;
    t.nacked_version = t.sent_version;
    t.nacked_config = t.sent_config;
    return a;
  }
  t.acked_version = t.sent_version;
  t.acked_config = t.sent_config;
  if (t.acked_version == currentVersion(latest_, type_url)) t.acked_config = std::max(t.acked_config, latest_.version);
  t.acked_at = now;
  t.last_nack.reset();
  return a;
}

SyncState StreamSync::state(const std::string& type_url, const NodeConfig& current) const {
  const std::string want = currentVersion(current, type_url);
  const Type* t = find(type_url);
  if (want.empty() || t == nullptr) return SyncState::kNotSent;
  const bool in_flight = !t->sent_nonce.empty();
  // Holding the current version while an older one is still on its way is
  // not in sync yet: the proxy will apply that one first.
  if (t->acked_version == want && (!in_flight || t->sent_version == want)) return SyncState::kSynced;
  if (in_flight) return SyncState::kStale;
  if (t->last_nack && t->nacked_version == want) return SyncState::kNacked;
  return SyncState::kNotSent;
}

std::uint64_t StreamSync::typeConfigVersion(const Type* t, const std::string& type_url,
                                            const NodeConfig& current) const {
  if (t == nullptr) return 0;
  return state(type_url, current) == SyncState::kSynced ? current.version : t->acked_config;
}

std::uint64_t StreamSync::configVersion(const NodeConfig& current) const {
  std::uint64_t v = 0;
  bool first = true;
  for (const auto& type_url : xds::pushOrder()) {
    const std::uint64_t tv = typeConfigVersion(find(type_url), type_url, current);
    if (tv == 0) return 0;
    v = first ? tv : std::min(v, tv);
    first = false;
  }
  return v;
}

void StreamSync::appendJson(std::string& out, const NodeConfig& current, Clock::time_point now,
                            std::chrono::system_clock::time_point wall_now) const {
  auto ageSeconds = [&](Clock::time_point t) {
    return std::max<long long>(0, std::chrono::duration_cast<std::chrono::seconds>(now - t).count());
  };
  // "time_key":"2026-…Z","age_key":S, or nulls when it never happened.
  auto appendWhen = [&](std::string& to, const std::optional<Clock::time_point>& t, const char* time_key,
                        const char* age_key) {
    to += ",\"";
    to += time_key;
    to += "\":";
    if (t) {
      const auto ago = std::chrono::duration_cast<std::chrono::system_clock::duration>(now - *t);
      to += "\"" + isoTime(wall_now - ago) + "\"";
    } else {
      to += "null";
    }
    to += ",\"";
    to += age_key;
    to += "\":";
    to += t ? std::to_string(ageSeconds(*t)) : "null";
  };

  bool synced = true;
  std::optional<Clock::time_point> last_ack;
  std::string types = "{";
  for (const auto& type_url : xds::pushOrder()) {
    static const Type kNever;
    const Type* found = find(type_url);
    const Type& t = found ? *found : kNever;
    const SyncState s = state(type_url, current);
    synced = synced && s == SyncState::kSynced;
    if (t.acked_at && (!last_ack || *t.acked_at > *last_ack)) last_ack = t.acked_at;
    if (types.size() > 1) types += ',';
    appendJsonString(types, type_url.substr(type_url.rfind('.') + 1));
    types += ":{\"state\":\"";
    types += stateName(s);
    types += "\",\"sent_version\":";
    appendJsonString(types, t.sent_version);
    types += ",\"acked_version\":";
    appendJsonString(types, t.acked_version);
    types += ",\"acked_config_version\":";
    appendNumberOrNull(types, typeConfigVersion(found, type_url, current));
    types += ",\"last_nack\":";
    if (t.last_nack) appendJsonString(types, *t.last_nack);
    else types += "null";
    types += ",\"nacked_version\":";
    if (t.last_nack) appendJsonString(types, t.nacked_version);
    else types += "null";
    types += ",\"nacked_config_version\":";
    appendNumberOrNull(types, t.last_nack ? t.nacked_config : 0);
    appendWhen(types, t.acked_at, "last_ack", "last_ack_age_seconds");
    types += "}";
  }
  out += ",\"config_version\":";
  appendNumberOrNull(out, configVersion(current));
  out += synced ? ",\"synced\":true" : ",\"synced\":false";
  appendWhen(out, last_ack, "last_ack", "last_ack_age_seconds");
  out += ",\"types\":" + types + "}";
}

}  // namespace infermesh::controlplane
