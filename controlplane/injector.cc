#include "controlplane/injector.h"

#include <openssl/evp.h>
#include <simdjson.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>

#include "proxy/common/cidr.h"
#include "proxy/common/json_string.h"

namespace infermesh::controlplane {
namespace {

std::string q(std::string_view s) {
  std::string out;
  common::appendJsonString(out, s);
  return out;
}

// RFC 6901: '~' and '/' inside a key of a JSON Pointer.
std::string pointerKey(std::string_view key) {
  std::string out;
  for (char c : key) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
  return out;
}

std::string base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::string join(const std::vector<std::string>& items, char sep) {
  std::string out;
  for (const auto& i : items) {
    if (!out.empty()) out += sep;
    out += i;
  }
  return out;
}

std::string quantities(const std::map<std::string, std::string>& m) {
  std::string out = "{";
  for (const auto& [k, v] : m) out += (out.size() > 1 ? "," : "") + q(k) + ":" + q(v);
  return out + "}";
}

// What the review says about the pod, read once.
struct Pod {
  std::string name;  // name or generateName, for messages
  std::string service_account = "default";
  std::map<std::string, std::string> annotations;
  bool has_annotations = false;
  bool has_init_containers = false;
  bool has_volumes = false;
  std::vector<std::string> containers;
  std::vector<std::string> init_containers;
};

std::string_view stringOr(simdjson::dom::element e, std::string_view key, std::string_view fallback = {}) {
  std::string_view v;
  if (e[key].get(v) == simdjson::SUCCESS) return v;
  return fallback;
}

// The names of the containers in `array` (absent: none); false when it is
// not an array of objects with names.
bool containerNames(simdjson::dom::element spec, std::string_view key, std::vector<std::string>& out, bool& present) {
  simdjson::dom::element e;
  present = spec[key].get(e) == simdjson::SUCCESS && !e.is_null();
  if (!present) return true;
  simdjson::dom::array list;
  if (e.get(list) != simdjson::SUCCESS) return false;
  for (auto c : list) {
    std::string_view name;
    if (c["name"].get(name) != simdjson::SUCCESS) return false;
    out.emplace_back(name);
  }
  return true;
}

bool readPod(simdjson::dom::element object, Pod& pod, std::string& error) {
  simdjson::dom::element metadata, spec;
  if (object["metadata"].get(metadata) != simdjson::SUCCESS || !metadata.is_object()) {
    error = "the pod has no metadata";
    return false;
  }
  if (object["spec"].get(spec) != simdjson::SUCCESS || !spec.is_object()) {
    error = "the pod has no spec";
    return false;
  }
  pod.name = stringOr(metadata, "name", stringOr(metadata, "generateName", "(unnamed)"));
  simdjson::dom::element annotations;
  if (metadata["annotations"].get(annotations) == simdjson::SUCCESS && !annotations.is_null()) {
    simdjson::dom::object map;
    if (annotations.get(map) != simdjson::SUCCESS) {
      error = "metadata.annotations is not an object";
      return false;
    }
    pod.has_annotations = true;
    for (auto [k, v] : map) {
      std::string_view value;
      if (v.get(value) != simdjson::SUCCESS) {
        error = "annotation \"" + std::string(k) + "\" is not a string";
        return false;
      }
      pod.annotations.emplace(k, value);
    }
  }
  pod.service_account = stringOr(spec, "serviceAccountName", "default");
  bool containers_present = false;
  if (!containerNames(spec, "containers", pod.containers, containers_present) || !containers_present ||
      pod.containers.empty()) {
    error = "spec.containers is not a list of named containers";
    return false;
  }
  if (!containerNames(spec, "initContainers", pod.init_containers, pod.has_init_containers)) {
    error = "spec.initContainers is not a list of named containers";
    return false;
  }
  simdjson::dom::element volumes;
  pod.has_volumes = spec["volumes"].get(volumes) == simdjson::SUCCESS && !volumes.is_null();
  if (pod.has_volumes && !volumes.is_array()) {
    error = "spec.volumes is not a list";
    return false;
  }
  return true;
}

bool contains(const std::vector<std::string>& v, std::string_view s) {
  for (const auto& x : v)
    if (x == s) return true;
  return false;
}

std::string proxyContainer(const InjectorConfig& c, const Pod& pod) {
  std::vector<std::string> labels;
  for (const auto& [k, v] : c.node_labels) labels.push_back(k + "=" + v);
  // Expanded by the kubelet from the env below.
  labels.push_back("namespace=$(POD_NAMESPACE)");
  labels.push_back("service-account=" + pod.service_account);
  labels.push_back("node=$(NODE_NAME)");
  const std::string admin = std::to_string(c.admin_port);
  auto fieldEnv = [](std::string_view name, std::string_view path) {
    return "{\"name\":" + q(name) + ",\"valueFrom\":{\"fieldRef\":{\"fieldPath\":" + q(path) + "}}}";
  };
  std::string out = "{\"name\":" + q(kProxyContainer) + ",\"image\":" + q(c.image) +
                    ",\"imagePullPolicy\":" + q(c.image_pull_policy) + ",\"args\":[\"--control-plane\"," +
                    q(c.control_plane) + ",\"--node-id\",\"$(POD_NAME).$(POD_NAMESPACE)\",\"--node-labels\"," +
                    q(join(labels, ',')) + ",\"--admin\"," + q("0.0.0.0:" + admin) +
                    ",\"--config-cache\",\"/var/cache/infermesh/config.pb\",\"--workers\"," +
                    q(std::to_string(c.workers)) + "]";
  out += ",\"env\":[" + fieldEnv("POD_NAME", "metadata.name") + "," + fieldEnv("POD_NAMESPACE", "metadata.namespace") +
         "," + fieldEnv("NODE_NAME", "spec.nodeName") + "]";
  out += ",\"ports\":[{\"name\":\"infermesh-out\",\"containerPort\":" + std::to_string(c.outbound_port) +
         ",\"protocol\":\"TCP\"},{\"name\":\"infermesh-admin\",\"containerPort\":" + admin + ",\"protocol\":\"TCP\"}]";
  out += ",\"readinessProbe\":{\"httpGet\":{\"path\":\"/ready\",\"port\":" + admin +
         "},\"periodSeconds\":2,\"failureThreshold\":30}";
  out += ",\"livenessProbe\":{\"httpGet\":{\"path\":\"/healthz\",\"port\":" + admin +
         "},\"initialDelaySeconds\":5,\"periodSeconds\":10}";
  out += ",\"resources\":{\"requests\":" + quantities(c.requests) + ",\"limits\":" + quantities(c.limits) + "}";
  const std::string uid = std::to_string(c.proxy_uid);
  out += ",\"securityContext\":{\"runAsUser\":" + uid + ",\"runAsGroup\":" + uid +
         ",\"runAsNonRoot\":true,\"readOnlyRootFilesystem\":true,\"allowPrivilegeEscalation\":false,"
         "\"capabilities\":{\"drop\":[\"ALL\"]}}";
  out += ",\"volumeMounts\":[{\"name\":\"infermesh-certs\",\"mountPath\":\"/etc/infermesh/certs\"},"
         "{\"name\":\"infermesh-token\",\"mountPath\":\"/var/run/secrets/infermesh/tokens\",\"readOnly\":true},"
         "{\"name\":\"infermesh-cache\",\"mountPath\":\"/var/cache/infermesh\"}]}";
  return out;
}

// The interception step: nat rules in the pod's network namespace, run
// once before the app starts; needs NET_ADMIN, nothing after.
std::string initContainer(const InjectorConfig& c) {
  std::string args = "[\"install\",\"--proxy-uid\"," + q(std::to_string(c.proxy_uid)) + ",\"--outbound-port\"," +
                     q(std::to_string(c.outbound_port));
  if (!c.intercept_ports.empty()) {
    std::vector<std::string> ports;
    for (int p : c.intercept_ports) ports.push_back(std::to_string(p));
    args += ",\"--ports\"," + q(join(ports, ','));
  }
  if (!c.intercept_cidrs.empty()) args += ",\"--cidrs\"," + q(join(c.intercept_cidrs, ','));
  if (!c.exclude_cidrs.empty()) args += ",\"--exclude-cidrs\"," + q(join(c.exclude_cidrs, ','));
  args += "]";
  return "{\"name\":" + q(kInitContainer) + ",\"image\":" + q(c.image) + ",\"imagePullPolicy\":" +
         q(c.image_pull_policy) + ",\"command\":[\"infermesh-iptables\"],\"args\":" + args +
         ",\"resources\":{\"requests\":{\"cpu\":\"10m\",\"memory\":\"16Mi\"},\"limits\":{\"memory\":\"64Mi\"}}"
         ",\"securityContext\":{\"runAsUser\":0,\"runAsNonRoot\":false,\"readOnlyRootFilesystem\":true,"
         "\"allowPrivilegeEscalation\":false,\"capabilities\":{\"drop\":[\"ALL\"],\"add\":[\"NET_ADMIN\",\"NET_RAW\"]}}}";
}

std::vector<std::string> volumes(const InjectorConfig& c) {
  return {
      "{\"name\":\"infermesh-certs\",\"emptyDir\":{\"medium\":\"Memory\"}}",
      "{\"name\":\"infermesh-cache\",\"emptyDir\":{}}",
      "{\"name\":\"infermesh-token\",\"projected\":{\"sources\":[{\"serviceAccountToken\":{\"audience\":" +
          q(c.token_audience) + ",\"expirationSeconds\":" + std::to_string(c.token_expiration_seconds) +
          ",\"path\":\"token\"}}]}}",
  };
}

// The JSONPatch (RFC 6902) that injects `pod`.
std::string patchFor(const Pod& pod, const InjectorConfig& c) {
  std::vector<std::string> ops;
  auto add = [&](const std::string& path, const std::string& value) {
    ops.push_back("{\"op\":\"add\",\"path\":" + q(path) + ",\"value\":" + value + "}");
  };
  // First, so it starts before the app; `kubectl exec/logs` keep
  // choosing the app's container by default.
  add("/spec/containers/0", proxyContainer(c, pod));
  if (pod.has_init_containers) add("/spec/initContainers/-", initContainer(c));
  else add("/spec/initContainers", "[" + initContainer(c) + "]");
  const auto vols = volumes(c);
  if (pod.has_volumes) {
    for (const auto& v : vols) add("/spec/volumes/-", v);
  } else {
    add("/spec/volumes", "[" + join(vols, ',') + "]");
  }
  std::map<std::string, std::string> annotations{{std::string(kStatusAnnotation), "injected"}};
  if (!pod.annotations.count("kubectl.kubernetes.io/default-container"))
    annotations["kubectl.kubernetes.io/default-container"] = pod.containers.front();
  // The proxy's metrics, unless the app already asked to be scraped.
  if (!pod.annotations.count("prometheus.io/scrape")) {
    annotations["prometheus.io/scrape"] = "true";
    annotations["prometheus.io/port"] = std::to_string(c.admin_port);
    annotations["prometheus.io/path"] = "/metrics";
  }
  if (!pod.has_annotations) {
    std::string map = "{";
    for (const auto& [k, v] : annotations) map += (map.size() > 1 ? "," : "") + q(k) + ":" + q(v);
    add("/metadata/annotations", map + "}");
  } else {
    for (const auto& [k, v] : annotations) add("/metadata/annotations/" + pointerKey(k), q(v));
  }
  return "[" + join(ops, ',') + "]";
}

std::string answer(std::string_view uid, bool allowed, std::string_view extra) {
  return "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"response\":{\"uid\":" + q(uid) +
         ",\"allowed\":" + (allowed ? "true" : "false") + std::string(extra) + "}}";
}

ReviewAnswer refuse(std::string_view uid, unsigned http_status, std::string reason) {
  ReviewAnswer a;
  a.http_status = http_status;
  a.outcome = ReviewOutcome::Error;
  a.body = answer(uid, false, ",\"status\":{\"code\":" + std::to_string(http_status == 200 ? 400 : http_status) +
                                  ",\"message\":" + q("infermesh sidecar injector: " + reason) + "}");
  a.reason = std::move(reason);
  return a;
}

ReviewAnswer skip(std::string_view uid, std::string reason) {
  ReviewAnswer a;
  a.outcome = ReviewOutcome::Skipped;
  a.body = answer(uid, true, "");
  a.reason = std::move(reason);
  return a;
}

}  // namespace

ReviewAnswer review(std::string_view body, const InjectorConfig& config) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(body.data(), body.size()).get(doc) != simdjson::SUCCESS || !doc.is_object())
    return refuse("", 400, "the body is not a JSON object");
  if (stringOr(doc, "apiVersion") != "admission.k8s.io/v1" || stringOr(doc, "kind") != "AdmissionReview")
    return refuse("", 400, "expected an admission.k8s.io/v1 AdmissionReview");
  simdjson::dom::element request;
  if (doc["request"].get(request) != simdjson::SUCCESS || !request.is_object())
    return refuse("", 400, "the AdmissionReview has no request");
  const std::string_view uid = stringOr(request, "uid");
  if (uid.empty()) return refuse("", 400, "request.uid is missing");
  simdjson::dom::element kind;
  if (request["kind"].get(kind) != simdjson::SUCCESS || !kind.is_object())
    return refuse(uid, 200, "request.kind is missing");
  if (stringOr(kind, "group") != "" || stringOr(kind, "version") != "v1" || stringOr(kind, "kind") != "Pod")
    return skip(uid, "not a v1 Pod");
  if (stringOr(request, "operation") != "CREATE") return skip(uid, "not a CREATE");
  simdjson::dom::element object;
  if (request["object"].get(object) != simdjson::SUCCESS || !object.is_object())
    return refuse(uid, 200, "request.object is not a pod");
  Pod pod;
  if (std::string error; !readPod(object, pod, error)) return refuse(uid, 200, error);
  if (auto it = pod.annotations.find(std::string(kInjectAnnotation)); it != pod.annotations.end() && it->second == "false")
    return skip(uid, "pod " + pod.name + " opted out (" + std::string(kInjectAnnotation) + ": \"false\")");
  if (pod.annotations.count(std::string(kStatusAnnotation)) || contains(pod.containers, kProxyContainer) ||
      contains(pod.init_containers, kInitContainer))
    return skip(uid, "pod " + pod.name + " is already injected");
  ReviewAnswer a;
  a.outcome = ReviewOutcome::Injected;
  a.body = answer(uid, true, ",\"patchType\":\"JSONPatch\",\"patch\":" + q(base64(patchFor(pod, config))));
  a.reason = "pod " + pod.name;
  return a;
}

bool loadInjectorConfig(const std::string& path, InjectorConfig& out, std::string& error) {
  InjectorConfig c;
  try {
    const YAML::Node root = YAML::LoadFile(path);
    if (!root.IsMap()) {
      error = path + ": expected a mapping";
      return false;
    }
    for (const auto& kv : root) {
      const std::string key = kv.first.as<std::string>();
      const YAML::Node& v = kv.second;
      auto port = [&](int& into) {
        into = v.as<int>();
        if (into < 1 || into > 65535) throw std::runtime_error(key + ": " + std::to_string(into) + " is not a port");
      };
      auto stringMap = [&](std::map<std::string, std::string>& into) {
        if (!v.IsMap()) throw std::runtime_error(key + ": expected a mapping");
        into.clear();
        for (const auto& e : v) into[e.first.as<std::string>()] = e.second.as<std::string>();
      };
      auto cidrs = [&](std::vector<std::string>& into) {
        into = v.as<std::vector<std::string>>();
        for (const auto& s : into)
          if (!common::parseCidr(s)) throw std::runtime_error(key + ": \"" + s + "\" is not a CIDR");
      };
      if (key == "image") c.image = v.as<std::string>();
      else if (key == "imagePullPolicy") c.image_pull_policy = v.as<std::string>();
      else if (key == "controlPlane") c.control_plane = v.as<std::string>();
      else if (key == "adminPort") port(c.admin_port);
      else if (key == "outboundPort") port(c.outbound_port);
      else if (key == "proxyUid") c.proxy_uid = v.as<std::int64_t>();
      else if (key == "workers") c.workers = v.as<int>();
      else if (key == "interceptPorts") {
        c.intercept_ports.clear();
        for (const auto& p : v) {
          int n = p.as<int>();
          if (n < 1 || n > 65535) throw std::runtime_error("interceptPorts: " + std::to_string(n) + " is not a port");
          c.intercept_ports.push_back(n);
        }
      } else if (key == "interceptCidrs") cidrs(c.intercept_cidrs);
      else if (key == "excludeCidrs") cidrs(c.exclude_cidrs);
      else if (key == "resources") {
        for (const auto& e : v) {
          const std::string k = e.first.as<std::string>();
          if (k != "requests" && k != "limits") throw std::runtime_error("resources." + k + ": expected requests or limits");
          auto& into = k == "requests" ? c.requests : c.limits;
          into.clear();
          for (const auto& amount : e.second) into[amount.first.as<std::string>()] = amount.second.as<std::string>();
        }
      } else if (key == "nodeLabels") stringMap(c.node_labels);
      else if (key == "tokenAudience") c.token_audience = v.as<std::string>();
      else if (key == "tokenExpirationSeconds") c.token_expiration_seconds = v.as<std::int64_t>();
      else
        throw std::runtime_error(
            "unknown field \"" + key +
            "\" (known: image, imagePullPolicy, controlPlane, adminPort, outboundPort, proxyUid, workers, "
            "interceptPorts, interceptCidrs, excludeCidrs, resources, nodeLabels, tokenAudience, "
            "tokenExpirationSeconds)");
    }
  } catch (const std::exception& e) {
    error = path + ": " + e.what();
    return false;
  }
  if (c.image.empty() || c.control_plane.empty()) {
    error = path + ": image and controlPlane are required";
    return false;
  }
  if (c.proxy_uid <= 0) {
    error = path + ": proxyUid must be a non-root UID";
    return false;
  }
  if (c.workers < 1) {
    error = path + ": workers must be at least 1";
    return false;
  }
  if (c.token_expiration_seconds < 600) {
    error = path + ": tokenExpirationSeconds must be at least 600 (the Kubernetes minimum)";
    return false;
  }
  if (c.intercept_ports.empty() && c.intercept_cidrs.empty()) {
    error = path + ": interceptPorts or interceptCidrs must name what the app's traffic to intercept is";
    return false;
  }
  out = std::move(c);
  return true;
}

}  // namespace infermesh::controlplane
