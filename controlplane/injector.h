#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace infermesh::controlplane {

// What the sidecar injector adds to a pod (`--inject-config`, YAML; see
// docs/kubernetes.md#sidecar-injection). Defaults are what an injected pod
// gets when the file leaves a field out.
struct InjectorConfig {
  std::string image;  // required
  std::string image_pull_policy = "IfNotPresent";
  std::string control_plane;  // required: host:port of infermesh-control's xDS
  int admin_port = 15000;
  int outbound_port = 15001;
  std::int64_t proxy_uid = 1337;
  int workers = 2;
  std::vector<int> intercept_ports;          // the app's outbound ports sent to the proxy
  std::vector<std::string> intercept_cidrs;  // or destinations
  std::vector<std::string> exclude_cidrs;
  std::map<std::string, std::string> requests{{"cpu", "100m"}, {"memory", "64Mi"}};
  std::map<std::string, std::string> limits{{"memory", "256Mi"}};
  std::map<std::string, std::string> node_labels{{"role", "sidecar"}};
  std::string token_audience = "infermesh";
  std::int64_t token_expiration_seconds = 3600;
};

// Reads and checks the file; false with the reason in `error`.
bool loadInjectorConfig(const std::string& path, InjectorConfig& out, std::string& error);

// Pod annotations the injector reads and writes.
inline constexpr std::string_view kInjectAnnotation = "infermesh.io/inject";  // "false": opt out
inline constexpr std::string_view kStatusAnnotation = "infermesh.io/status";  // "injected"
inline constexpr std::string_view kProxyContainer = "infermesh-proxy";
inline constexpr std::string_view kInitContainer = "infermesh-init";

enum class ReviewOutcome : std::uint8_t { Injected, Skipped, Error };
inline constexpr const char* kReviewOutcomeNames[] = {"injected", "skipped", "error"};

struct ReviewAnswer {
  unsigned http_status = 200;
  std::string body;  // an admission.k8s.io/v1 AdmissionReview
  ReviewOutcome outcome = ReviewOutcome::Error;
  std::string reason;  // why it was skipped or refused, for the log
};

// One AdmissionReview request (the POST body) in, the AdmissionReview
// answer out: for a pod CREATE, a JSONPatch that adds the proxy, the
// interception init container, their volumes and annotations; nothing for
// a pod that opted out or is already injected, or anything not a pod; an
// AdmissionReview error (allowed: false, with the cause) for input that is
// not a well-formed review.
ReviewAnswer review(std::string_view body, const InjectorConfig& config);

}  // namespace infermesh::controlplane
