#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "controlplane/snapshot_cache.h"

namespace infermesh::controlplane {

// Where one resource type stands on one proxy, against the config the
// control plane has for that proxy now.
enum class SyncState {
  kSynced,   // the proxy ACKed (or reported holding) the current version
  kStale,    // a response is on its way or awaits its ACK
  kNacked,   // the proxy refused the current version
  kNotSent,  // the proxy does not have the current version and nothing is on its way
};
std::string_view stateName(SyncState s);

// One stream's ACK/NACK bookkeeping per resource type, for status and
// metrics. It only observes: the protocol rules live in
// xds::SotwServerStream and xds::DeltaServerStream. Versions on the wire are
// content hashes; this ties each one back to the control plane's config
// version (ConfigLoad::version), so every proxy in sync shows the same
// number. Not thread-safe: the stream's reactor holds its own lock.
class StreamSync {
 public:
  using Clock = std::chrono::steady_clock;

  struct Answer {
    bool acked = false;           // false: NACKed
    std::string version;          // the type version it answers
    Clock::duration since_sent{};  // from sending the response to this answer
  };

  // The node was given `config` (at stream start and on every push).
  void onConfig(const NodeConfig& config);
  // The first request for a type on this stream. `reported`: the version
  // the proxy says it holds ("" when unknown or when the protocol does not
  // carry one); `up_to_date`: the stream had nothing to send for it.
  void onSubscribe(const std::string& type_url, const std::string& reported, bool up_to_date, Clock::time_point now);
  void onSent(const std::string& type_url, const std::string& version, const std::string& nonce,
              Clock::time_point now);
  // An ACK or NACK (`error` set) for the response in flight; nothing for a
  // request without a nonce or with a stale one.
  std::optional<Answer> onAnswer(const std::string& type_url, const std::string& nonce,
                                 const std::optional<std::string>& error, Clock::time_point now);

  SyncState state(const std::string& type_url, const NodeConfig& current) const;
  // The newest config version whose content the proxy holds for every
  // type; 0 when that is not known (a type never confirmed, or confirmed
  // only with content from before this control plane started).
  std::uint64_t configVersion(const NodeConfig& current) const;

  // Appends the proxy's sync fields to a JSON object being written:
  // ,"config_version":N|null,"synced":B,"last_ack":T|null,
  // "last_ack_age_seconds":S|null,"types":{"Model":{...},...}
  void appendJson(std::string& out, const NodeConfig& current, Clock::time_point now,
                  std::chrono::system_clock::time_point wall_now) const;

 private:
  struct Type {
    bool subscribed = false;
    std::string sent_version;  // type version (content hash) last sent
    std::string sent_nonce;    // of the response awaiting ACK/NACK ("" if none)
    std::uint64_t sent_config = 0;
    Clock::time_point sent_at{};
    std::string acked_version;      // what the proxy holds
    std::uint64_t acked_config = 0;  // newest config version with that content; 0: unknown
    std::optional<Clock::time_point> acked_at;
    std::optional<std::string> last_nack;
    std::string nacked_version;
    std::uint64_t nacked_config = 0;
  };
  // `t`'s config version as status shows it: the current one when synced.
  std::uint64_t typeConfigVersion(const Type* t, const std::string& type_url, const NodeConfig& current) const;
  const Type* find(const std::string& type_url) const;

  NodeConfig latest_;  // the config the stream was last given
  std::map<std::string, Type> types_;
};

}  // namespace infermesh::controlplane
