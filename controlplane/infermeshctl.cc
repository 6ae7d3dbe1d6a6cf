// infermeshctl: the operator's command line. See docs/control-plane.md.
//   infermeshctl validate DIR
//   infermeshctl status --control-plane ADMIN_ADDR
//   infermeshctl explain --config-dir DIR --model M [--path P] [--listener L] [--header k=v ...]
//   infermeshctl audit verify FILE...   (docs/audit.md)
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <simdjson.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "filters/router/route_matcher.h"
#include "proxy/audit/audit_chain.h"
#include "proxy/config/compiler.h"
#include "proxy/config/yaml_loader.h"

namespace {

using namespace infermesh;

int usage() {
  std::fprintf(stderr,
               "usage:\n"
               "  infermeshctl validate DIR|FILE\n"
               "  infermeshctl status --control-plane ADMIN_ADDR\n"
               "  infermeshctl explain --config-dir DIR --model M [--path P] [--listener L] [--header k=v ...]\n"
               "  infermeshctl audit verify FILE...   (rotated files oldest first: log.2 log.1 log)\n");
  return 2;
}

config::CompileResult load(const std::string& path) {
  return config::loadAndCheck(path, 1);
}

int validate(const std::string& path) {
  auto r = load(path);
  if (!r.snapshot) {
    for (const auto& e : r.errors) std::printf("%s\n", e.str().c_str());
    std::printf("%zu error%s\n", r.errors.size(), r.errors.size() == 1 ? "" : "s");
    return 1;
  }
  std::printf("ok: %zu listeners, %zu models, %zu routes\n", r.snapshot->listeners.size(), r.snapshot->models.size(),
              r.snapshot->routes.size());
  return 0;
}

// "3s ago", "4m ago", "2h ago", "5d ago".
std::string ago(int64_t seconds) {
  if (seconds < 120) return std::to_string(seconds) + "s ago";
  if (seconds < 2 * 3600) return std::to_string(seconds / 60) + "m ago";
  if (seconds < 2 * 86400) return std::to_string(seconds / 3600) + "h ago";
  return std::to_string(seconds / 86400) + "d ago";
}

// Prints `text` with every line after the first indented by `indent`.
void printIndented(std::string_view text, const char* indent) {
  for (std::size_t start = 0; start <= text.size();) {
    const auto nl = text.find('\n', start);
    const auto line = text.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start);
    std::printf("%s%.*s\n", start == 0 ? "" : indent, int(line.size()), line.data());
    if (nl == std::string_view::npos) break;
    start = nl + 1;
  }
}

// The /status answer as a table: the control plane's config version, then
// one row per proxy with each type's sync state, the config version the
// proxy holds in full and how long ago it last ACKed; a line per NACK.
void printStatus(simdjson::dom::element doc) {
  simdjson::dom::object load;
  int64_t version = 0;
  if (!doc["config"].get_object().get(load)) {
    std::string_view at, source;
    int64_t changed = 0;
    if (load["version"].get_int64().get(version)) version = 0;
    if (load["loaded_at"].get_string().get(at)) at = "?";
    if (load["source"].get_string().get(source)) source = "?";
    if (load["changed_resources"].get_int64().get(changed)) changed = 0;
    std::printf("CONTROL PLANE  version %lld (loaded %.*s from %.*s, %lld resource%s changed)\n",
                static_cast<long long>(version), int(at.size()), at.data(), int(source.size()), source.data(),
                static_cast<long long>(changed), changed == 1 ? "" : "s");
  } else if (!doc["config_version"].get_int64().get(version) && version > 0) {
    std::printf("CONTROL PLANE  version %lld\n", static_cast<long long>(version));  // an older control plane
  } else {
    std::printf("CONTROL PLANE  no valid config loaded\n");
  }
  std::string_view err;
  if (!doc["last_config_error"].get_string().get(err)) {
    std::printf(version > 0 ? "the last load was rejected, the version above stays in force:\n  "
                            : "the config directory is rejected:\n  ");
    printIndented(err, "  ");
  }

  struct Column {
    const char* key;     // in "types"
    const char* header;  // in the table
    const char* plural;  // in NACK lines
  };
  static const Column kTypes[] = {{"Listener", "LISTENERS", "listeners"},
                                  {"Model", "MODELS", "models"},
                                  {"Route", "ROUTES", "routes"},
                                  {"Tenant", "TENANTS", "tenants"},
                                  {"Policy", "POLICIES", "policies"}};
  // Rows by proxy id, as the control plane lists streams in no set order.
  std::vector<std::pair<std::string_view, simdjson::dom::element>> rows;
  simdjson::dom::array proxies;
  if (!doc["proxies"].get_array().get(proxies))
    for (auto p : proxies) {
      std::string_view id;
      if (p["id"].get_string().get(id)) id = {};
      rows.emplace_back(id, p);
    }
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  int id_width = 5;
  for (const auto& [id, p] : rows) id_width = std::max(id_width, int(id.size()));
  std::printf("\n%-*s", id_width + 2, "PROXY");
  for (const auto& c : kTypes) std::printf(" %-10s", c.header);
  std::printf(" %-8s %-9s %-6s %s\n", "VERSION", "LAST ACK", "STREAM", "LABELS");
  if (rows.empty()) std::printf("(no proxy connected)\n");
  for (const auto& [id, p] : rows) {
    std::string_view kind;
    if (p["stream"].get_string().get(kind)) kind = {};
    std::string labels;
    simdjson::dom::object lo;
    if (!p["labels"].get_object().get(lo))
      for (auto kv : lo) {
        std::string_view v;
        if (kv.value.get_string().get(v)) v = {};
        labels += (labels.empty() ? "" : ",") + std::string(kv.key) + "=" + std::string(v);
      }
    std::printf("%-*.*s", id_width + 2, int(id.size()), id.data());
    std::vector<std::string> nacks;
    for (const auto& c : kTypes) {
      auto t = p["types"][c.key];
      std::string_view state;
      if (t["state"].get_string().get(state)) state = "-";
      std::printf(" %-10.*s", int(state.size()), state.data());
      std::string_view detail;
      if (state != "NACKED" || t["last_nack"].get_string().get(detail)) continue;
      int64_t refused = 0;
      std::string line = std::string("  NACKED ") + c.plural;
      if (!t["nacked_config_version"].get_int64().get(refused)) line += " (version " + std::to_string(refused) + ")";
      nacks.push_back(line + ": " + std::string(detail));
    }
    int64_t held = 0, age = 0;
    const std::string v = p["config_version"].get_int64().get(held) ? "-" : std::to_string(held);
    const std::string last = p["last_ack_age_seconds"].get_int64().get(age) ? "never" : ago(age);
    std::printf(" %-8s %-9s %-6.*s %s\n", v.c_str(), last.c_str(), int(kind.size()), kind.data(),
                labels.empty() ? "-" : labels.c_str());
    for (const auto& n : nacks) printIndented(n, "    ");
  }
}

int status(const std::string& address) {
  namespace asio = boost::asio;
  namespace http = boost::beast::http;
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) return usage();
  std::string body;
  try {
    asio::io_context io;
    asio::ip::tcp::resolver resolver(io);
    boost::beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(5));
    stream.connect(resolver.resolve(address.substr(0, colon), address.substr(colon + 1)));
    http::request<http::empty_body> req{http::verb::get, "/status", 11};
    req.set(http::field::host, address);
    http::write(stream, req);
    boost::beast::flat_buffer buf;
    http::response<http::string_body> res;
    http::read(stream, buf, res);
    body = res.body();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cannot reach the control plane at %s: %s\n", address.c_str(), e.what());
    return 1;
  }
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (parser.parse(body).get(doc)) {
    std::fprintf(stderr, "unexpected answer from %s\n", address.c_str());
    return 1;
  }
  printStatus(doc);
  return 0;
}

int explain(const std::string& dir, const std::string& model, const std::string& path, const std::string& listener,
            const std::vector<std::pair<std::string, std::string>>& headers) {
  auto r = load(dir);
  if (!r.snapshot) {
    for (const auto& e : r.errors) std::printf("%s\n", e.str().c_str());
    return 1;
  }
  const auto& snap = *r.snapshot;
  const config::ListenerConfig* l = listener.empty() ? &snap.listeners.front() : snap.findListener(listener);
  if (l == nullptr) {
    std::printf("listener \"%s\" is not defined\n", listener.c_str());
    return 1;
  }
  filter::RequestHead req;
  req.method = "POST";
  req.target = path;
  for (const auto& [k, v] : headers) req.headers.add(k, v);
  const config::ModelConfig* named = snap.findModel(model);
  std::printf("request: POST %s on listener %s, model \"%s\"%s\n\n", path.c_str(), l->name.c_str(), model.c_str(),
              named ? (named->name == model ? "" : (" (alias of " + named->name + ")").c_str()) : " (unknown)");
  // Why each route does or does not take the request, in match order.
  for (const auto& route : snap.routes) {
    std::vector<std::string> why_not;
    if (!route.listeners.empty() &&
        std::find(route.listeners.begin(), route.listeners.end(), l->index) == route.listeners.end())
      why_not.push_back("not on this listener");
    if (!route.path_exact.empty() && req.path() != route.path_exact) why_not.push_back("path is not " + route.path_exact);
    if (!route.path_prefix.empty() && !req.path().starts_with(route.path_prefix))
      why_not.push_back("path does not start with " + route.path_prefix);
    for (const auto& h : route.headers) {
      auto v = req.headers.get(h.name);
      if (!v) why_not.push_back("no header " + h.name);
      else if (!h.value.empty() && *v != h.value) why_not.push_back("header " + h.name + " is not " + h.value);
    }
    if (!route.models.empty() &&
        (named == nullptr || std::find(route.models.begin(), route.models.end(), named->index) == route.models.end()))
      why_not.push_back("model not in match.models");
    std::printf("  route %-24s %s\n", route.name.c_str(), why_not.empty() ? "MATCHES" : "no:");
    for (const auto& w : why_not) std::printf("      - %s\n", w.c_str());
    if (!why_not.empty()) continue;
    static const char* kPolicy[] = {"least request", "weighted round robin", "ewma", "consistent hash", "load aware"};
    auto endpoints = [](const config::ModelConfig& m, const char* indent) {
      std::printf("%sendpoints (%s; ejected, resting or unhealthy ones are skipped):\n", indent,
                  kPolicy[static_cast<int>(m.lb.policy)]);
      for (const auto& ep : m.endpoints)
        std::printf("%s  %s (%s:%u)%s%s\n", indent, ep.address.c_str(), ep.ip.c_str(), ep.port,
                    ep.region.empty() ? "" : (" region=" + ep.region).c_str(),
                    ep.zone.empty() ? "" : (" zone=" + ep.zone).c_str());
    };
    // A split ignores the body's model: each arm is a model of its own,
    // with its share of requests and its own endpoints.
    const config::ModelConfig* target = route.split.empty() ? (route.target ? route.target : named) : nullptr;
    if (!route.split.empty()) {
      std::printf("\nresult: route %s -> weighted split over %zu models:\n", route.name.c_str(), route.split.size());
      for (const auto& w : route.split) {
        std::printf("  arm %-20s weight %u of %u (%.1f%% of requests), sent upstream as \"%s\"\n",
                    w.model->name.c_str(), w.weight, route.split_total, 100.0 * w.weight / route.split_total,
                    w.model->upstream_model.c_str());
        endpoints(*w.model, "    ");
      }
    }
    if (model == "auto") {
      static const char* kObjective[] = {"cheapest", "fastest", "preference"};
      std::printf("\nresult: route %s -> the %s model with capability \"%s\" (x-infermesh-capability overrides)\n",
                  route.name.c_str(), kObjective[static_cast<int>(route.auto_select.objective)],
                  route.auto_select.capability.c_str());
      return 0;
    }
    if (route.split.empty() && target == nullptr) {
      std::printf("\nresult: 404 model_not_found (the route forwards to the body's model, which is unknown)\n");
      return 0;
    }
    for (const auto& m : route.mirrors)
      std::printf("mirror: %.1f%% of requests copied to %s (responses discarded)\n", m.percent, m.model->name.c_str());
    for (const auto& f : route.fallbacks) std::printf("fallback: %s\n", f.model->name.c_str());
    if (!route.residency.empty()) {
      std::printf("residency: only endpoints in");
      for (const auto& r : route.residency) std::printf(" %s", r.c_str());
      std::printf("\n");
    }
    if (target == nullptr) return 0;
    std::printf("\nresult: route %s -> model %s (sent upstream as \"%s\")\n", route.name.c_str(), target->name.c_str(),
                target->upstream_model.c_str());
    endpoints(*target, "");
    return 0;
  }
  std::printf("\nresult: 404 no_route\n");
  return 0;
}

// Exit 0 when the chain holds, 1 when a record is broken, 2 when a file
// cannot be read (nothing was judged).
int auditVerify(const std::vector<std::string>& files) {
  const auto r = audit::verifyChain(files);
  if (r.unreadable) {
    std::fprintf(stderr, "%s: %s\n", r.first_bad_path.c_str(), r.reason.c_str());
    return 2;
  }
  if (!r.ok) {
    std::printf("broken: %s line %llu (seq %s): %s\n", r.first_bad_path.c_str(),
                static_cast<unsigned long long>(r.first_bad_line),
                r.first_bad_seq == 0 ? "?" : std::to_string(r.first_bad_seq).c_str(), r.reason.c_str());
    if (r.records > 0)
      std::printf("the %llu records before it verify (seq %llu..%llu)\n", static_cast<unsigned long long>(r.records),
                  static_cast<unsigned long long>(r.first_seq), static_cast<unsigned long long>(r.last_seq));
    return 1;
  }
  if (r.records == 0) {
    std::printf("ok: 0 records\n");
    return 0;
  }
  std::printf("ok: %llu records, seq %llu..%llu\n", static_cast<unsigned long long>(r.records),
              static_cast<unsigned long long>(r.first_seq), static_cast<unsigned long long>(r.last_seq));
  std::printf("last hash: %.*s\n", int(r.last_hash.size()), r.last_hash.data());
  if (r.starts_mid_chain)
    std::printf("note: seq %llu chains to a record not in these files (rotated away?); it is taken as the start\n",
                static_cast<unsigned long long>(r.first_seq));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  const std::string cmd = argv[1];
  if (cmd == "validate") return argc == 3 ? validate(argv[2]) : usage();
  if (cmd == "audit") {
    if (argc < 4 || std::string(argv[2]) != "verify") return usage();
    return auditVerify(std::vector<std::string>(argv + 3, argv + argc));
  }
  std::string control_plane, dir, model, path = "/v1/chat/completions", listener;
  std::vector<std::pair<std::string, std::string>> headers;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    std::string v = argv[++i];
    if (a == "--control-plane") control_plane = v;
    else if (a == "--config-dir") dir = v;
    else if (a == "--model") model = v;
    else if (a == "--path") path = v;
    else if (a == "--listener") listener = v;
    else if (a == "--header") {
      auto eq = v.find('=');
      if (eq == std::string::npos) return usage();
      headers.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else {
      return usage();
    }
  }
  if (cmd == "status" && !control_plane.empty()) return status(control_plane);
  if (cmd == "explain" && !dir.empty()) return explain(dir, model, path, listener, headers);
  return usage();
}
