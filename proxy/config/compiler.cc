#include "proxy/config/compiler.h"

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/time_util.h>
#include <malloc.h>
#include <netdb.h>
#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <functional>
#include <map>

#include "proxy/config/governance_compiler.h"
#include "proxy/config/rate_limit_compiler.h"
#include "proxy/config/yaml_loader.h"
#include "proxy/common/json_string.h"
#include "proxy/common/spiffe_id.h"
#include "proxy/stats/name_table.h"

namespace infermesh::config {
namespace {

namespace pb = google::protobuf;

struct HostPort {
  std::string host;
  std::uint16_t port = 0;
};

// "host:port" or "[v6]:port". Returns an error text, empty when fine.
std::string splitHostPort(const std::string& s, HostPort& out, bool allow_zero_port) {
  std::string host, port;
  if (!s.empty() && s[0] == '[') {
    auto close = s.find(']');
    if (close == std::string::npos || close + 1 >= s.size() || s[close + 1] != ':')
      return "\"" + s + "\" is not host:port";
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string::npos || colon == 0) return "\"" + s + "\" is not host:port";
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  unsigned value = 0;
  auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc() || p != port.data() + port.size() || value > 65535 ||
      (value == 0 && !allow_zero_port))
    return "\"" + s + "\" has an invalid port";
  out.host = host;
  out.port = static_cast<std::uint16_t>(value);
  return {};
}

// Resolves a name once, at compile time (IP literals pass through).
std::string resolve(const std::string& host, std::string& ip) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || res == nullptr) return "cannot resolve \"" + host + "\": " + gai_strerror(rc);
  char buf[INET6_ADDRSTRLEN] = {};
  if (res->ai_family == AF_INET)
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, buf, sizeof buf);
  else
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(res->ai_addr)->sin6_addr, buf, sizeof buf);
  ::freeaddrinfo(res);
  ip = buf;
  return {};
}

bool isIpLiteral(const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::chrono::milliseconds toMillis(const pb::Duration& d) {
  return std::chrono::milliseconds(pb::util::TimeUtil::DurationToMilliseconds(d));
}

template <typename Spec>
void dumpResources(std::string& out, const char* key, const std::vector<Resource<Spec>>& list) {
  out += "\"";
  out += key;
  out += "\":[";
  pb::util::JsonPrintOptions options;
  options.preserve_proto_field_names = false;
  for (std::size_t i = 0; i < list.size(); ++i) {
    std::string spec;
    (void)pb::util::MessageToJsonString(list[i].spec, &spec, options);
    if (i) out += ',';
    out += "{\"name\":";
    common::appendJsonString(out, list[i].name);
    out += ",\"file\":";
    common::appendJsonString(out, list[i].file);
    out += ",\"line\":" + std::to_string(list[i].line) + ",\"spec\":" + spec + "}";
  }
  out += "]";
}

class Compiler {
 public:
  Compiler(const Resources& r, ConfigErrors& errors) : r_(r), errors_(errors) {}

  std::shared_ptr<Snapshot> run(std::uint64_t version) {
    auto snap = std::make_shared<Snapshot>();
    snap->version = version;
    if (r_.listeners.empty())
      errors_.push_back(ConfigError{"", "", "", 0, "no Listener defined: the proxy would accept no traffic"});
    snap->models.reserve(r_.models.size());  // pointers into it are handed out below
    for (const auto& m : r_.models) model(*snap, m);
    for (const auto& m : snap->models)
      for (const auto& c : m.capabilities) snap->models_by_capability[c].push_back(&m);
    for (const auto& l : r_.listeners) listener(*snap, l);
    mesh();
    std::vector<std::pair<int, RouteConfig>> ordered;
    for (const auto& rt : r_.routes) route(*snap, rt, ordered);
    // Descending `order`, then source order (stable sort keeps it).
    std::stable_sort(ordered.begin(), ordered.end(),
                     [](const auto& a, const auto& b) { return a.first > b.first; });
    for (auto& [o, rc] : ordered) snap->routes.push_back(std::move(rc));
    snap->routes_naming_model.resize(snap->models.size());
    for (std::uint32_t i = 0; i < snap->routes.size(); ++i) {
      const auto& models = snap->routes[i].models;
      if (models.empty()) snap->routes_any_model.push_back(i);
      for (std::uint32_t m : models) {
        auto& list = snap->routes_naming_model[m];
        if (list.empty() || list.back() != i) list.push_back(i);
      }
    }
    compileGovernance(r_, *snap, errors_);
    compileRateLimits(r_, *snap, errors_);

    std::string dump = "{\"version\":" + std::to_string(version) + ",";
    dumpResources(dump, "listeners", r_.listeners);
    dump += ',';
    dumpResources(dump, "models", r_.models);
    dump += ',';
    dumpResources(dump, "routes", r_.routes);
    dump += ',';
    dumpResources(dump, "tenants", r_.tenants);
    dump += ',';
    dumpResources(dump, "policies", r_.policies);
    dump += '}';
    snap->hash = std::to_string(std::hash<std::string>{}(dump.substr(dump.find(','))));
    snap->dump_json = std::move(dump);
    return snap;
  }

 private:
  // The Mesh is applied per proxy (applyMesh); here it is only checked,
  // with the Models that name its nodes.
  void mesh() {
    const Resource<v1::Mesh>* mesh = r_.meshes.empty() ? nullptr : &r_.meshes.front();
    for (std::size_t i = 1; i < r_.meshes.size(); ++i)
      errors_.push_back(r_.meshes[i].error("", "a second Mesh (the first is Mesh/" + mesh->name + " in " + mesh->file +
                                                   "); there is at most one"));
    std::map<std::string, std::string> address_of;
    if (mesh != nullptr) {
      const auto& spec = mesh->spec;
      if (spec.node_proxy_selector().empty())
        errors_.push_back(mesh->error("spec.nodeProxySelector", "is required (the labels node proxies carry)"));
      if (spec.nodes().empty()) errors_.push_back(mesh->error("spec.nodes", "at least one node is required"));
      std::map<std::string, std::string> node_at;
      for (int i = 0; i < spec.nodes_size(); ++i) {
        const auto& n = spec.nodes(i);
        const std::string path = "spec.nodes[" + std::to_string(i) + "]";
        HostPort hp;
        if (n.name().empty()) errors_.push_back(mesh->error(path + ".name", "is required"));
        else if (!address_of.emplace(n.name(), n.address()).second)
          errors_.push_back(mesh->error(path + ".name", "node \"" + n.name() + "\" is listed twice"));
        if (auto err = splitHostPort(n.address(), hp, false); !err.empty())
          errors_.push_back(mesh->error(path + ".address", err));
        else if (auto [it, fresh] = node_at.emplace(n.address(), n.name()); !fresh)
          errors_.push_back(mesh->error(path + ".address", "is also node \"" + it->second +
                                                               "\"'s: each node has its own proxy"));
      }
      if (!spec.listener().empty()) {
        bool found = false;
        for (const auto& l : r_.listeners) found = found || l.name == spec.listener();
        if (!found) errors_.push_back(mesh->error("spec.listener", "no Listener \"" + spec.listener() + "\""));
      }
      if (!spec.upstream_protocol().empty() && spec.upstream_protocol() != "http1" &&
          spec.upstream_protocol() != "http2" && spec.upstream_protocol() != "auto")
        errors_.push_back(mesh->error("spec.upstreamProtocol", "must be http1, http2 or auto"));
    }
    for (const auto& m : r_.models) {
      int named = 0;
      for (int i = 0; i < m.spec.endpoints_size(); ++i) {
        const std::string& node = m.spec.endpoints(i).node();
        if (node.empty()) continue;
        ++named;
        const std::string path = "spec.endpoints[" + std::to_string(i) + "].node";
        if (mesh == nullptr)
          errors_.push_back(m.error(path, "names node \"" + node + "\" but there is no Mesh to reach it by"));
        else if (!address_of.contains(node))
          errors_.push_back(m.error(path, "node \"" + node + "\" is not in Mesh/" + mesh->name + " nodes"));
      }
      if (named != 0 && named != m.spec.endpoints_size())
        errors_.push_back(m.error("spec.endpoints", "either every endpoint names its node or none does"));
    }
  }

  void model(Snapshot& snap, const Resource<v1::Model>& m) {
    const auto& spec = m.spec;
    ModelConfig mc;
    mc.name = m.name;
    mc.index = static_cast<std::uint32_t>(snap.models.size());
    mc.stats_id = stats::NameTable::instance().intern(m.name);
    mc.upstream_model = spec.upstream_model().empty() ? m.name : spec.upstream_model();
    mc.aliases.assign(spec.aliases().begin(), spec.aliases().end());
    mc.capabilities.assign(spec.capabilities().begin(), spec.capabilities().end());
    if (!spec.protocol().empty() && spec.protocol() != "openai" && spec.protocol() != "open-inference")
      errors_.push_back(
          m.error("spec.protocol", "unsupported protocol \"" + spec.protocol() + "\" (openai or open-inference)"));
    if (spec.protocol() == "open-inference") mc.body_format = BodyFormat::OpenInference;
    if (spec.upstream_protocol() == "http2") mc.upstream_h2 = true;
    else if (spec.upstream_protocol() == "auto") mc.upstream_auto = true;
    else if (!spec.upstream_protocol().empty() && spec.upstream_protocol() != "http1")
      errors_.push_back(m.error("spec.upstreamProtocol", "must be http1, http2 or auto"));
    if (spec.has_upstream_tls()) {
      const auto& t = spec.upstream_tls();
      auto& u = mc.upstream_tls;
      u.ca_file = t.ca_file();
      u.server_name = t.server_name();
      u.spiffe_ids.assign(t.spiffe_ids().begin(), t.spiffe_ids().end());
      u.cert_file = t.cert_file();
      u.key_file = t.key_file();
      if (u.ca_file.empty()) errors_.push_back(m.error("spec.upstreamTls.caFile", "is required"));
      if (u.cert_file.empty() != u.key_file.empty())
        errors_.push_back(m.error("spec.upstreamTls.certFile", "certFile and keyFile go together"));
      for (int i = 0; i < t.spiffe_ids_size(); ++i)
        if (auto why = common::spiffePatternError(t.spiffe_ids(i)); !why.empty())
          errors_.push_back(m.error("spec.upstreamTls.spiffeIds[" + std::to_string(i) + "]", why));
    }
    if (mc.upstream_auto && !spec.has_upstream_tls())
      errors_.push_back(m.error("spec.upstreamProtocol", "auto needs upstreamTls (ALPN)"));
    if (spec.has_connect_timeout()) {
      mc.connect_timeout = toMillis(spec.connect_timeout());
      if (mc.connect_timeout.count() <= 0) errors_.push_back(m.error("spec.connectTimeout", "must be > 0"));
    }
    if (spec.has_upstream_idle_timeout()) {
      mc.upstream_idle_timeout = toMillis(spec.upstream_idle_timeout());
      if (mc.upstream_idle_timeout.count() < 0) errors_.push_back(m.error("spec.upstreamIdleTimeout", "must be >= 0"));
    }
    loadBalancer(m, mc.lb);
    healthCheck(m, mc.health_check);
    loadReport(m, mc.load_report);
    circuitBreakers(m, mc.circuit_breakers);
    activation(m, mc.activation);
    if (spec.has_locality()) {
      mc.locality.enabled = spec.locality().enabled();
      if (spec.locality().spillover_threshold_percent() > 100)
        errors_.push_back(m.error("spec.locality.spilloverThresholdPercent", "must be 0..100"));
      else if (spec.locality().spillover_threshold_percent() > 0)
        mc.locality.spillover_threshold_percent = spec.locality().spillover_threshold_percent();
    }
    mc.context_window = spec.context_window();
    mc.price_in_per_1k = spec.pricing().input_per_1k_tokens();
    mc.price_out_per_1k = spec.pricing().output_per_1k_tokens();
    mc.price_cached_in_per_1k =
        spec.pricing().has_cached_input_per_1k_tokens() ? spec.pricing().cached_input_per_1k_tokens() : mc.price_in_per_1k;
    if (mc.price_in_per_1k < 0 || mc.price_out_per_1k < 0 || mc.price_cached_in_per_1k < 0)
      errors_.push_back(m.error("spec.pricing", "prices must be >= 0"));
    mc.regions.assign(spec.regions().begin(), spec.regions().end());
    if (spec.has_upstream_credential()) {
      const auto& c = spec.upstream_credential();
      auto& uc = mc.upstream_credential;
      uc.header = c.header();
      std::transform(uc.header.begin(), uc.header.end(), uc.header.begin(),
                     [](unsigned char ch) { return std::tolower(ch); });
      uc.value_file = c.value_file();
      uc.prefix = c.prefix();
      if (uc.header.empty() || uc.header.find_first_of(" :\r\n") != std::string::npos)
        errors_.push_back(m.error("spec.upstreamCredential.header", "must be a header name"));
      if (uc.value_file.empty()) errors_.push_back(m.error("spec.upstreamCredential.valueFile", "is required"));
      if (uc.prefix.find_first_of("\r\n") != std::string::npos)
        errors_.push_back(m.error("spec.upstreamCredential.prefix", "must be on one line"));
    }
    for (const auto& [raw, value] : spec.upstream_headers()) {
      std::string name = raw;
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) { return std::tolower(ch); });
      const std::string path = "spec.upstreamHeaders." + raw;
      static constexpr std::string_view kTchar = "!#$%&'*+-.^_`|~";
      const bool token = !name.empty() && std::all_of(name.begin(), name.end(), [](unsigned char ch) {
        return std::isalnum(ch) || kTchar.find(static_cast<char>(ch)) != std::string_view::npos;
      });
      // The proxy's own: framing, hop-by-hop, and what it writes itself.
      static constexpr std::array<std::string_view, 14> kReserved = {
          "host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "upgrade",
          "proxy-connection", "expect", "x-request-id", "x-forwarded-for", "x-forwarded-client-cert", "traceparent",
          "tracestate"};
      if (!token)
        errors_.push_back(m.error(path, "must be a header name"));
      else if (std::find(kReserved.begin(), kReserved.end(), name) != kReserved.end())
        errors_.push_back(m.error(path, "is set by the proxy itself and cannot be configured"));
      else if (name == mc.upstream_credential.header)
        errors_.push_back(m.error(path, "is the upstreamCredential's header"));
      else if (value.size() > 4096 || value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
        errors_.push_back(m.error(path, "must be one line of at most 4096 bytes"));
      else
        mc.upstream_headers.emplace_back(std::move(name), value);
    }
    std::sort(mc.upstream_headers.begin(), mc.upstream_headers.end());
    if (spec.has_outlier_detection()) {
      const auto& od = spec.outlier_detection();
      mc.outlier.consecutive_failures = od.consecutive_failures();
      if (od.has_base_ejection_time()) mc.outlier.base_ejection = toMillis(od.base_ejection_time());
      if (od.max_ejection_percent() > 100)
        errors_.push_back(m.error("spec.outlierDetection.maxEjectionPercent", "must be 0..100"));
      else if (od.max_ejection_percent() > 0)
        mc.outlier.max_ejection_percent = od.max_ejection_percent();
    }
    if (spec.endpoints().empty()) errors_.push_back(m.error("spec.endpoints", "at least one endpoint is required"));
    for (int i = 0; i < spec.endpoints_size(); ++i) {
      const auto& e = spec.endpoints(i);
      const std::string path = "spec.endpoints[" + std::to_string(i) + "].address";
      EndpointConfig ec;
      ec.address = e.address();
      ec.region = e.region();
      ec.zone = e.zone();
      ec.weight = e.weight() == 0 ? 1 : e.weight();
      ec.priority = e.priority();
      ec.capacity = e.capacity();
      if (ec.capacity > 1000000)
        errors_.push_back(m.error("spec.endpoints[" + std::to_string(i) + "].capacity", "must be at most 1000000"));
      // An endpoint without a region is where its model is, if that is one place.
      if (ec.region.empty() && mc.regions.size() == 1) ec.region = mc.regions[0];
      HostPort hp;
      if (auto err = splitHostPort(e.address(), hp, false); !err.empty()) {
        errors_.push_back(m.error(path, err));
        continue;
      }
      ec.port = hp.port;
      ec.host = hp.host;
      if (auto err = resolve(hp.host, ec.ip); !err.empty()) {
        errors_.push_back(m.error(path, err));
        continue;
      }
      ec.key = std::hash<std::string>{}(ec.ip + "|" + std::to_string(ec.port));
      mc.total_weight += ec.weight;
      mc.endpoints.push_back(std::move(ec));
    }
    snap.models.push_back(std::move(mc));
    const ModelConfig* ptr = &snap.models.back();
    auto claim = [&](const std::string& name, const std::string& path) {
      auto [it, inserted] = snap.model_by_name.emplace(name, ptr);
      if (!inserted)
        errors_.push_back(m.error(path, "model name \"" + name + "\" is already used by Model/" + it->second->name));
    };
    claim(m.name, "metadata.name");
    for (int i = 0; i < spec.aliases_size(); ++i)
      claim(spec.aliases(i), "spec.aliases[" + std::to_string(i) + "]");
  }

  // A duration field that must be > 0 when set.
  template <typename Spec>
  void positive(const Resource<Spec>& r, bool has, const pb::Duration& d, std::chrono::milliseconds& into,
                const std::string& path) {
    if (!has) return;
    into = toMillis(d);
    if (into.count() <= 0) errors_.push_back(r.error(path, "must be > 0"));
  }

  void loadBalancer(const Resource<v1::Model>& m, LoadBalancerConfig& lb) {
    const auto& spec = m.spec.load_balancer();
    const std::string& policy = spec.policy();
    if (policy.empty() || policy == "least_request") lb.policy = LbPolicy::LeastRequest;
    else if (policy == "round_robin") lb.policy = LbPolicy::RoundRobin;
    else if (policy == "ewma") lb.policy = LbPolicy::Ewma;
    else if (policy == "consistent_hash") lb.policy = LbPolicy::ConsistentHash;
    else if (policy == "load_aware") lb.policy = LbPolicy::LoadAware;
    else
      errors_.push_back(m.error("spec.loadBalancer.policy",
                                "unknown policy \"" + policy +
                                    "\" (least_request, round_robin, ewma, consistent_hash or load_aware)"));
    lb.hash_header = spec.hash_header();
    for (auto& c : lb.hash_header) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (spec.hash_prompt_prefix_bytes() > 0) lb.hash_prompt_prefix_bytes = spec.hash_prompt_prefix_bytes();
    if (spec.bounded_load_factor() != 0) {
      lb.bounded_load_factor = spec.bounded_load_factor();
      if (lb.bounded_load_factor < 1)
        errors_.push_back(m.error("spec.loadBalancer.boundedLoadFactor", "must be >= 1"));
    }
    positive(m, spec.has_load_report_half_life(), spec.load_report_half_life(), lb.load_report_half_life,
             "spec.loadBalancer.loadReportHalfLife");
    if (policy != "consistent_hash" && (!spec.hash_header().empty() || spec.hash_prompt_prefix_bytes() > 0 ||
                                        spec.bounded_load_factor() != 0))
      errors_.push_back(m.error("spec.loadBalancer.policy", "hash settings need policy consistent_hash"));
  }

  void healthCheck(const Resource<v1::Model>& m, HealthCheckConfig& hc) {
    if (!m.spec.has_health_check()) return;
    const auto& spec = m.spec.health_check();
    if (spec.path().empty() || spec.path()[0] != '/')
      errors_.push_back(m.error("spec.healthCheck.path", "is required and must start with /"));
    hc.path = spec.path();
    positive(m, spec.has_interval(), spec.interval(), hc.interval, "spec.healthCheck.interval");
    positive(m, spec.has_timeout(), spec.timeout(), hc.timeout, "spec.healthCheck.timeout");
    if (spec.has_jitter()) hc.jitter = toMillis(spec.jitter());
    if (hc.jitter.count() < 0) errors_.push_back(m.error("spec.healthCheck.jitter", "must be >= 0"));
    if (spec.healthy_threshold()) hc.healthy_threshold = spec.healthy_threshold();
    if (spec.unhealthy_threshold()) hc.unhealthy_threshold = spec.unhealthy_threshold();
  }

  void loadReport(const Resource<v1::Model>& m, LoadReportConfig& lr) {
    if (!m.spec.has_load_report()) return;
    const auto& spec = m.spec.load_report();
    if (spec.path().empty() || spec.path()[0] != '/')
      errors_.push_back(m.error("spec.loadReport.path", "is required and must start with /"));
    lr.path = spec.path();
    positive(m, spec.has_interval(), spec.interval(), lr.interval, "spec.loadReport.interval");
    positive(m, spec.has_timeout(), spec.timeout(), lr.timeout, "spec.loadReport.timeout");
  }

  void circuitBreakers(const Resource<v1::Model>& m, CircuitBreakerConfig& cb) {
    const auto& spec = m.spec.circuit_breakers();
    cb.max_connections = spec.max_connections();
    cb.max_requests = spec.max_requests();
    cb.max_pending_requests = spec.max_pending_requests();
    positive(m, spec.has_max_queue_time(), spec.max_queue_time(), cb.max_queue_time,
             "spec.circuitBreakers.maxQueueTime");
    if (cb.max_pending_requests > 0 && cb.max_requests == 0)
      errors_.push_back(m.error("spec.circuitBreakers.maxPendingRequests",
                                "requests only wait for a slot under maxRequests; set it too"));
  }

  void activation(const Resource<v1::Model>& m, ActivationConfig& a) {
    if (!m.spec.has_activation()) return;
    const auto& spec = m.spec.activation();
    const std::string path = "spec.activation.webhook";
    a.webhook = spec.webhook();
    std::string rest = a.webhook;
    if (rest.rfind("http://", 0) != 0) {
      errors_.push_back(m.error(path, "must be an http:// URL, got \"" + a.webhook + "\""));
    } else {
      rest = rest.substr(7);
      const auto slash = rest.find('/');
      a.path = slash == std::string::npos ? "/" : rest.substr(slash);
      a.host_header = rest.substr(0, slash);
      HostPort hp;
      if (auto err = splitHostPort(a.host_header, hp, false); !err.empty()) errors_.push_back(m.error(path, err));
      else if (auto rerr = resolve(hp.host, a.ip); !rerr.empty()) errors_.push_back(m.error(path, rerr));
      a.port = hp.port;
    }
    positive(m, spec.has_queue_timeout(), spec.queue_timeout(), a.queue_timeout, "spec.activation.queueTimeout");
    if (spec.max_queued()) a.max_queued = spec.max_queued();
    if (!m.spec.has_health_check())
      errors_.push_back(m.error("spec.activation", "needs healthCheck: queued requests are released when an "
                                                   "endpoint passes it"));
  }

  // accessLog.fields and accessLog.extra: names it knows, each once.
  void compileAccessLog(const Resource<v1::Listener>& l, const v1::AccessLog& spec, AccessLogFormat& out) {
    auto known = [] {
      std::string all;
      for (auto n : kLogFieldNames) all += (all.empty() ? "" : ", ") + std::string(n);
      return all;
    };
    std::vector<std::string> seen;
    for (int i = 0; i < spec.fields_size(); ++i) {
      const auto& name = spec.fields(i);
      const auto at = std::find(kLogFieldNames.begin(), kLogFieldNames.end(), name);
      const std::string path = "spec.accessLog.fields[" + std::to_string(i) + "]";
      if (at == kLogFieldNames.end()) {
        errors_.push_back(l.error(path, "unknown field \"" + name + "\" (" + known() + ")"));
      } else if (std::find(seen.begin(), seen.end(), name) != seen.end()) {
        errors_.push_back(l.error(path, "\"" + name + "\" is listed twice"));
      } else {
        out.fields.push_back(static_cast<LogField>(at - kLogFieldNames.begin()));
      }
      seen.push_back(name);
    }
    if (spec.fields_size() == 0)
      for (std::size_t i = 0; i < kLogFieldNames.size(); ++i) out.fields.push_back(static_cast<LogField>(i));
    for (int i = 0; i < spec.extra_size(); ++i) {
      const auto& e = spec.extra(i);
      const std::string path = "spec.accessLog.extra[" + std::to_string(i) + "]";
      const bool name_ok = !e.name().empty() && e.name().size() <= 64 &&
                           std::all_of(e.name().begin(), e.name().end(), [](char c) {
                             return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
                           });
      if (!name_ok) {
        errors_.push_back(l.error(path + ".name", "must be a short name of letters, digits, _ - ."));
        continue;
      }
      if (std::find(kLogFieldNames.begin(), kLogFieldNames.end(), e.name()) != kLogFieldNames.end() ||
          std::find(seen.begin(), seen.end(), e.name()) != seen.end()) {
        errors_.push_back(l.error(path + ".name", "\"" + e.name() + "\" is already a field of the line"));
        continue;
      }
      seen.push_back(e.name());
      if (e.header().empty() == e.body().empty()) {
        errors_.push_back(l.error(path, "needs exactly one of header (a request header) or body (a JSON body field)"));
      } else if (!e.header().empty()) {
        std::string header = e.header();
        for (auto& c : header) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        out.extra.push_back(AccessLogFormat::Extra{e.name(), std::move(header)});
      } else {
        out.body_names.push_back(e.name());
        out.body_keys.push_back(e.body());
      }
    }
  }

  void listener(Snapshot& snap, const Resource<v1::Listener>& l) {
    const auto& spec = l.spec;
    ListenerConfig lc;
    lc.name = l.name;
    lc.index = static_cast<std::uint32_t>(snap.listeners.size());
    for (const auto& other : snap.listeners)
      if (other.name == l.name) errors_.push_back(l.error("metadata.name", "duplicate Listener name"));
    HostPort hp;
    if (auto err = splitHostPort(spec.address(), hp, true); !err.empty()) {
      errors_.push_back(l.error("spec.address", spec.address().empty() ? "is required" : err));
    } else if (!isIpLiteral(hp.host)) {
      errors_.push_back(l.error("spec.address", "must be an IP address, got \"" + hp.host + "\""));
    } else {
      lc.ip = hp.host;
      lc.port = hp.port;
      for (const auto& other : snap.listeners)
        if (other.ip == lc.ip && other.port == lc.port && lc.port != 0)
          errors_.push_back(l.error("spec.address", "already used by Listener/" + other.name));
    }
    if (spec.protocol() == "http2") lc.protocol = ListenerProtocol::Http2;
    else if (spec.protocol() == "auto") lc.protocol = ListenerProtocol::Auto;
    else if (!spec.protocol().empty() && spec.protocol() != "http1")
      errors_.push_back(l.error("spec.protocol", "unsupported protocol \"" + spec.protocol() +
                                                     "\" (http1, http2 or auto)"));
    if (spec.has_tls()) {
      const auto& t = spec.tls();
      if (t.certificates().empty())
        errors_.push_back(l.error("spec.tls.certificates", "at least one certificate is required"));
      for (int i = 0; i < t.certificates_size(); ++i) {
        const auto& c = t.certificates(i);
        const std::string path = "spec.tls.certificates[" + std::to_string(i) + "]";
        if (c.cert_file().empty()) errors_.push_back(l.error(path + ".certFile", "is required"));
        if (c.key_file().empty()) errors_.push_back(l.error(path + ".keyFile", "is required"));
        if (i > 0 && c.server_names().empty())
          errors_.push_back(l.error(path + ".serverNames", "only the first certificate may omit serverNames"));
        lc.tls.certificates.push_back(TlsCertificateConfig{
            c.cert_file(), c.key_file(), {c.server_names().begin(), c.server_names().end()}});
      }
      if (t.min_version() == "1.3") lc.tls.tls13_only = true;
      else if (!t.min_version().empty() && t.min_version() != "1.2")
        errors_.push_back(l.error("spec.tls.minVersion", "must be \"1.2\" or \"1.3\""));
      lc.tls.client_ca_file = t.client_ca_file();
      lc.tls.allowed_spiffe_ids.assign(t.allowed_spiffe_ids().begin(), t.allowed_spiffe_ids().end());
      for (int i = 0; i < t.allowed_spiffe_ids_size(); ++i)
        if (auto why = common::spiffePatternError(t.allowed_spiffe_ids(i)); !why.empty())
          errors_.push_back(l.error("spec.tls.allowedSpiffeIds[" + std::to_string(i) + "]", why));
      lc.tls.cipher_suites = t.cipher_suites();
      if (!t.allowed_spiffe_ids().empty() && t.client_ca_file().empty())
        errors_.push_back(l.error("spec.tls.allowedSpiffeIds", "needs clientCaFile (mTLS)"));
    }
    const auto& lim = spec.limits();
    if (lim.max_request_header_bytes()) {
      lc.limits.max_request_header_bytes = lim.max_request_header_bytes();
      if (lim.max_request_header_bytes() < 1024)
        errors_.push_back(l.error("spec.limits.maxRequestHeaderBytes", "must be at least 1024"));
    }
    if (lim.max_request_body_bytes()) lc.limits.max_request_body_bytes = lim.max_request_body_bytes();
    if (lim.max_concurrent_streams()) lc.limits.max_concurrent_streams = lim.max_concurrent_streams();
    if (lim.max_request_headers()) lc.limits.max_request_headers = lim.max_request_headers();
    auto duration = [&](bool has, const pb::Duration& d, std::chrono::milliseconds& into, const char* path) {
      if (!has) return;
      into = toMillis(d);
      if (into.count() <= 0) errors_.push_back(l.error(path, "must be > 0"));
    };
    duration(lim.has_header_timeout(), lim.header_timeout(), lc.limits.header_timeout, "spec.limits.headerTimeout");
    duration(lim.has_body_timeout(), lim.body_timeout(), lc.limits.body_timeout, "spec.limits.bodyTimeout");
    duration(lim.has_idle_timeout(), lim.idle_timeout(), lc.limits.idle_timeout, "spec.limits.idleTimeout");
    lc.access_log = spec.access_log().path();
    compileAccessLog(l, spec.access_log(), lc.access_log_format);
    lc.audit_log = spec.audit_log().path();
    if (spec.audit_log().max_bytes()) lc.audit_max_bytes = spec.audit_log().max_bytes();
    if (spec.audit_log().keep_files()) lc.audit_keep_files = spec.audit_log().keep_files();
    if (lc.audit_log.empty() && (spec.audit_log().max_bytes() || spec.audit_log().keep_files()))
      errors_.push_back(l.error("spec.auditLog.path", "is required"));
    if (spec.audit_log().max_bytes() && spec.audit_log().max_bytes() < 4096)
      errors_.push_back(l.error("spec.auditLog.maxBytes", "must be at least 4096"));
    if (spec.has_path_normalization()) {
      const auto& pn = spec.path_normalization();
      if (pn.has_merge_slashes()) lc.path_normalization.merge_slashes = pn.merge_slashes();
      const auto& es = pn.escaped_slashes();
      if (es == "keep") lc.path_normalization.escaped_slashes = common::EscapedSlashes::Keep;
      else if (es == "decode") lc.path_normalization.escaped_slashes = common::EscapedSlashes::Decode;
      else if (!es.empty() && es != "reject")
        errors_.push_back(l.error("spec.pathNormalization.escapedSlashes", "must be reject, keep or decode"));
    }
    const auto& trusted = spec.trusted_peers();
    for (int i = 0; i < trusted.spiffe_ids_size(); ++i) {
      if (auto why = common::spiffePatternError(trusted.spiffe_ids(i)); !why.empty())
        errors_.push_back(l.error("spec.trustedPeers.spiffeIds[" + std::to_string(i) + "]", why));
      lc.trusted_spiffe_ids.push_back(trusted.spiffe_ids(i));
    }
    if (!trusted.spiffe_ids().empty() && (!spec.has_tls() || spec.tls().client_ca_file().empty()))
      errors_.push_back(l.error("spec.trustedPeers.spiffeIds", "needs tls.clientCaFile (mTLS)"));
    for (int i = 0; i < trusted.sources_size(); ++i) {
      if (auto net = common::parseCidr(trusted.sources(i))) lc.trusted_sources.push_back(*net);
      else
        errors_.push_back(l.error("spec.trustedPeers.sources[" + std::to_string(i) + "]",
                                  "\"" + trusted.sources(i) + "\" is not an address or network (10.0.0.0/8)"));
    }
    for (int i = 0; i < spec.client_headers_size(); ++i) {
      std::string name = spec.client_headers(i);
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
      if (name != "x-infermesh-capability" && name != "x-infermesh-regions")
        errors_.push_back(l.error("spec.clientHeaders[" + std::to_string(i) + "]",
                                  "only x-infermesh-capability and x-infermesh-regions may come from any client"));
      lc.client_headers.push_back(std::move(name));
    }

    if (spec.filters().empty()) errors_.push_back(l.error("spec.filters", "at least the router filter is required"));
    // Target resolution runs before every filter of the chain (route,
    // models and price are known to them all); it is not listed in YAML.
    lc.resolver = filter::FilterRegistry::instance().resolver();
    for (int i = 0; i < spec.filters_size(); ++i) {
      const auto& f = spec.filters(i);
      const std::string path = "spec.filters[" + std::to_string(i) + "]";

      const auto* builder = filter::FilterRegistry::instance().find(f.name());
      if (builder == nullptr) {
        errors_.push_back(l.error(path + ".name", "unknown filter \"" + f.name() + "\" (" +
                                               filter::FilterRegistry::instance().names() + ")"));
        continue;
      }
      std::string json, error;
      (void)pb::util::MessageToJsonString(f.config(), &json);
      auto factory = (*builder)(json, error);
      if (!factory) {
        errors_.push_back(l.error(path + ".config", error));
        continue;
      }
      bool last = i + 1 == spec.filters_size();
      if (factory->terminal() != last)
        errors_.push_back(l.error(path + ".name", last ? "the last filter must be terminal (router)"
                                                       : "a terminal filter must be last"));
      lc.filters.push_back(std::move(factory));
      lc.filter_names.push_back(f.name());
    }
    snap.listeners.push_back(std::move(lc));
  }

  void route(const Snapshot& snap, const Resource<v1::Route>& rt,
             std::vector<std::pair<int, RouteConfig>>& out) {
    const auto& spec = rt.spec;
    RouteConfig rc;
    rc.name = rt.name;
    rc.stats_id = stats::NameTable::instance().intern(rt.name);
    const auto& m = spec.match();
    for (int i = 0; i < m.listeners_size(); ++i) {
      const auto* l = snap.findListener(m.listeners(i));
      if (l == nullptr)
        dangling(rt.error("spec.match.listeners[" + std::to_string(i) + "]",
                          "listener \"" + m.listeners(i) + "\" is not defined"));
      else
        rc.listeners.push_back(l->index);
    }
    if (!m.path_exact().empty() && !m.path_prefix().empty())
      errors_.push_back(rt.error("spec.match.pathExact", "set pathExact or pathPrefix, not both"));
    for (const auto* p : {&m.path_exact(), &m.path_prefix()})
      if (!p->empty() && (*p)[0] != '/')
        errors_.push_back(rt.error(p == &m.path_exact() ? "spec.match.pathExact" : "spec.match.pathPrefix",
                                   "must start with /"));
    rc.path_exact = m.path_exact();
    rc.path_prefix = m.path_prefix();
    for (int i = 0; i < m.headers_size(); ++i) {
      if (m.headers(i).name().empty())
        errors_.push_back(rt.error("spec.match.headers[" + std::to_string(i) + "].name", "is required"));
      rc.headers.push_back(HeaderMatch{m.headers(i).name(), m.headers(i).value()});
    }
    for (int i = 0; i < m.models_size(); ++i) {
      const ModelConfig* mc = snap.findModel(m.models(i));
      if (mc == nullptr)
        dangling(rt.error("spec.match.models[" + std::to_string(i) + "]",
                          "model \"" + m.models(i) + "\" is not defined"));
      else
        rc.models.push_back(mc->index);
    }
    if (!spec.model().empty()) {
      rc.target = snap.findModel(spec.model());
      if (rc.target == nullptr) dangling(rt.error("spec.model", "model \"" + spec.model() + "\" is not defined"));
    }
    const auto& t = spec.timeouts();
    if (t.has_request()) rc.request_timeout = toMillis(t.request());
    if (t.has_idle()) {
      rc.idle_timeout = toMillis(t.idle());
      if (rc.idle_timeout.count() <= 0) errors_.push_back(rt.error("spec.timeouts.idle", "must be > 0"));
    }
    for (int i = 0; i < spec.fallbacks_size(); ++i) {
      const auto& f = spec.fallbacks(i);
      const std::string path = "spec.fallbacks[" + std::to_string(i) + "]";
      FallbackConfig fc;
      fc.model = snap.findModel(f.model());
      if (fc.model == nullptr) dangling(rt.error(path + ".model", "model \"" + f.model() + "\" is not defined"));
      if (f.on().empty()) errors_.push_back(rt.error(path + ".on", "name at least one trigger"));
      for (int k = 0; k < f.on_size(); ++k) {
        const std::string& on = f.on(k);
        if (on == "connect_failure") fc.on_connect_failure = true;
        else if (on == "429") fc.on_429 = true;
        else if (on == "5xx") fc.on_5xx = true;
        else if (on == "timeout") fc.on_timeout = true;
        else if (on == "context_length") fc.on_context_length = true;
        else
          errors_.push_back(rt.error(path + ".on[" + std::to_string(k) + "]",
                                     "unknown trigger \"" + on + "\" (connect_failure, 429, 5xx, timeout, context_length)"));
      }
      rc.fallbacks.push_back(fc);
    }
    for (int i = 0; i < spec.split_size(); ++i) {
      const auto& w = spec.split(i);
      const std::string path = "spec.split[" + std::to_string(i) + "]";
      WeightedModel wm{snap.findModel(w.model()), w.weight()};
      if (wm.model == nullptr) dangling(rt.error(path + ".model", "model \"" + w.model() + "\" is not defined"));
      rc.split_total += w.weight();
      rc.split.push_back(wm);
    }
    if (!rc.split.empty() && rc.split_total == 0)
      errors_.push_back(rt.error("spec.split", "weights must not all be 0"));
    if (!rc.split.empty() && !spec.model().empty())
      errors_.push_back(rt.error("spec.split", "set model or split, not both"));
    for (int i = 0; i < spec.mirrors_size(); ++i) {
      const auto& mi = spec.mirrors(i);
      const std::string path = "spec.mirrors[" + std::to_string(i) + "]";
      MirrorConfig mc{snap.findModel(mi.model()), mi.percent()};
      if (mc.model == nullptr) dangling(rt.error(path + ".model", "model \"" + mi.model() + "\" is not defined"));
      if (!(mi.percent() > 0 && mi.percent() <= 100)) errors_.push_back(rt.error(path + ".percent", "must be in (0, 100]"));
      rc.mirrors.push_back(mc);
    }
    if (spec.has_auto_select()) {
      const auto& a = spec.auto_select();
      if (a.objective().empty() || a.objective() == "cheapest") rc.auto_select.objective = Objective::Cheapest;
      else if (a.objective() == "fastest") rc.auto_select.objective = Objective::Fastest;
      else if (a.objective() == "preference") rc.auto_select.objective = Objective::Preference;
      else
        errors_.push_back(rt.error("spec.autoSelect.objective", "unknown objective \"" + a.objective() +
                                                                    "\" (cheapest, fastest or preference)"));
      for (int i = 0; i < a.candidates_size(); ++i) {
        const ModelConfig* c = snap.findModel(a.candidates(i));
        if (c == nullptr)
          dangling(rt.error("spec.autoSelect.candidates[" + std::to_string(i) + "]",
                            "model \"" + a.candidates(i) + "\" is not defined"));
        else
          rc.auto_select.candidates.push_back(c);
      }
      rc.auto_select.enabled = true;
      if (!a.capability().empty()) rc.auto_select.capability = a.capability();
      rc.auto_select.capabilities.assign(a.capabilities().begin(), a.capabilities().end());
      if (rc.auto_select.objective == Objective::Preference && a.candidates().empty())
        errors_.push_back(rt.error("spec.autoSelect.candidates", "objective preference needs the candidates in order"));
    }
    if (spec.has_retry()) {
      const auto& r = spec.retry();
      RetryConfig& rc_retry = rc.retry;
      if (r.has_attempts()) rc_retry.attempts = r.attempts();
      if (r.attempts() > 10) errors_.push_back(rt.error("spec.retry.attempts", "at most 10"));
      if (!r.on().empty()) rc_retry.on_connect_failure = false;
      for (int k = 0; k < r.on_size(); ++k) {
        const std::string& on = r.on(k);
        if (on == "connect_failure") rc_retry.on_connect_failure = true;
        else if (on == "reset") rc_retry.on_reset = true;
        else if (on == "5xx") rc_retry.on_5xx = true;
        else if (on == "429") rc_retry.on_429 = true;
        else if (on == "timeout") rc_retry.on_timeout = true;
        else
          errors_.push_back(rt.error("spec.retry.on[" + std::to_string(k) + "]",
                                     "unknown condition \"" + on + "\" (connect_failure, reset, 5xx, 429, timeout)"));
      }
      if (r.budget_percent() > 100) errors_.push_back(rt.error("spec.retry.budgetPercent", "must be 0..100"));
      else if (r.budget_percent() > 0) rc_retry.budget_percent = r.budget_percent();
      if (r.min_concurrency() > 0) rc_retry.min_concurrency = r.min_concurrency();
      positive(rt, r.has_base_backoff(), r.base_backoff(), rc_retry.base_backoff, "spec.retry.baseBackoff");
      positive(rt, r.has_max_backoff(), r.max_backoff(), rc_retry.max_backoff, "spec.retry.maxBackoff");
      if (rc_retry.max_backoff < rc_retry.base_backoff)
        errors_.push_back(rt.error("spec.retry.maxBackoff", "must be >= baseBackoff"));
      rc_retry.retry_non_idempotent = r.retry_non_idempotent();
    }
    if (spec.priority().empty() || spec.priority() == "normal") rc.priority = Priority::Normal;
    else if (spec.priority() == "low") rc.priority = Priority::Low;
    else if (spec.priority() == "critical") rc.priority = Priority::Critical;
    else
      errors_.push_back(rt.error("spec.priority", "unknown priority \"" + spec.priority() + "\" (critical, normal or low)"));
    rc.residency.assign(spec.residency().begin(), spec.residency().end());
    if (!rc.residency.empty()) {
      // A fixed target with no endpoint in the allowed regions can never serve.
      for (const ModelConfig* fixed : {rc.target}) {
        if (fixed == nullptr) continue;
        bool any = false;
        for (const auto& ep : fixed->endpoints)
          any = any || std::find(rc.residency.begin(), rc.residency.end(), ep.region) != rc.residency.end();
        if (!any)
          errors_.push_back(rt.error("spec.residency", "no endpoint of model \"" + fixed->name +
                                                           "\" is in an allowed region"));
      }
    }
    if (t.has_first_token()) {
      rc.first_token_timeout = toMillis(t.first_token());
      if (rc.first_token_timeout.count() <= 0) errors_.push_back(rt.error("spec.timeouts.firstToken", "must be > 0"));
    }
    if (spec.has_hold_head_until_first_byte())
      rc.head_hold = spec.hold_head_until_first_byte() ? HeadHold::Always : HeadHold::Never;
    for (int i = 0; i < spec.filters_size(); ++i) {
      const auto& f = spec.filters(i);
      const std::string path = "spec.filters[" + std::to_string(i) + "]";
      const auto* builder = filter::FilterRegistry::instance().find(f.name());
      if (builder == nullptr) {
        errors_.push_back(rt.error(path + ".name", "unknown filter \"" + f.name() + "\" (" +
                                               filter::FilterRegistry::instance().names() + ")"));
        continue;
      }
      filter::RouteFilterOverride o;
      o.name = f.name();
      o.disabled = f.disabled();
      if (f.disabled() && f.has_config())
        errors_.push_back(rt.error(path + ".config", "a disabled filter takes no config"));
      if (!f.disabled()) {
        std::string json, error;
        (void)pb::util::MessageToJsonString(f.config(), &json);
        o.factory = (*builder)(json, error);
        if (!o.factory) {
          errors_.push_back(rt.error(path + ".config", error));
          continue;
        }
        if (o.factory->terminal()) {
          errors_.push_back(rt.error(path + ".name", "the terminal filter cannot be set per route"));
          continue;
        }
      }
      rc.filter_overrides.push_back(std::move(o));
    }
    out.emplace_back(spec.order(), std::move(rc));
  }

  void dangling(ConfigError e) {
    e.dangling_reference = true;
    errors_.push_back(std::move(e));
  }

  const Resources& r_;
  ConfigErrors& errors_;
};

}  // namespace

CompileResult compile(const Resources& resources, std::uint64_t version) {
  CompileResult result;
  auto snap = Compiler(resources, result.errors).run(version);
  if (result.errors.empty()) result.snapshot = std::move(snap);
  return result;
}

namespace {

// labels == nullptr: the config as written (tools, the control plane's
// check); otherwise the view of the proxy with those labels.
CompileResult loadFile(const std::string& path, std::uint64_t version, const Labels* labels) {
  CompileResult result;
  {
    YamlLoader loader;
    loader.loadPath(path);
    if (!loader.errors().empty()) return CompileResult{nullptr, loader.errors()};
    result = compile(loader.resources(), version);
    if (result.snapshot && labels && !loader.resources().meshes.empty()) {
      if (labels->empty()) {
        result.snapshot.reset();
        result.errors.push_back(loader.resources().meshes.front().error(
            "", "this config describes a mesh: start the proxy with --node-labels saying which of its "
                "proxies it is (e.g. role=sidecar)"));
      } else {
        result = compile(selectForNode(loader.resources(), *labels), version);
      }
    }
  }
  // Parsing a large config leaves many freed small blocks (YAML nodes,
  // protos); hand them back to the OS instead of keeping them as idle RSS.
  ::malloc_trim(0);
  return result;
}

}  // namespace

CompileResult loadAndCompile(const std::string& path, std::uint64_t version, const Labels& labels) {
  return loadFile(path, version, &labels);
}

CompileResult loadAndCheck(const std::string& path, std::uint64_t version) {
  return loadFile(path, version, nullptr);
}

bool ModelConfig::setsHeader(std::string_view name) const {
  for (const auto& [n, v] : upstream_headers)
    if (filter::equalsIgnoreCase(n, name)) return true;
  return false;
}

}  // namespace infermesh::config
