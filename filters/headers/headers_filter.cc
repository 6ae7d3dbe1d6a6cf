#include "filters/headers/headers_filter.h"

#include <simdjson.h>

#include "proxy/config/snapshot.h"
#include "proxy/filter/filter.h"

namespace infermesh::headers {

bool ValueTemplate::parse(std::string_view text, std::string& error) {
  static constexpr std::pair<std::string_view, Part> kVariables[] = {
      {"REQUEST_ID", Part::RequestId}, {"ROUTE", Part::Route},
      {"MODEL", Part::Model},          {"REQUESTED_MODEL", Part::RequestedModel},
      {"PEER_IDENTITY", Part::PeerIdentity}};
  std::string literal;
  while (!text.empty()) {
    const auto pct = text.find('%');
    literal.append(text.substr(0, pct));
    if (pct == std::string_view::npos) break;
    text.remove_prefix(pct + 1);
    if (text.starts_with('%')) {
      literal += '%';
      text.remove_prefix(1);
      continue;
    }
    const auto end = text.find('%');
    const std::string_view name = text.substr(0, end);
    const auto* var = std::find_if(std::begin(kVariables), std::end(kVariables), [&](auto& v) { return v.first == name; });
    if (end == std::string_view::npos || var == std::end(kVariables)) {
      error = "unknown variable %" + std::string(name) + (end == std::string_view::npos ? "" : "%") +
              " (REQUEST_ID, ROUTE, MODEL, REQUESTED_MODEL, PEER_IDENTITY; %% for a %)";
      return false;
    }
    if (!literal.empty()) parts_.emplace_back(Part::Literal, std::move(literal));
    literal.clear();
    parts_.emplace_back(var->second, std::string());
    text.remove_prefix(end + 1);
  }
  if (!literal.empty()) parts_.emplace_back(Part::Literal, std::move(literal));
  return true;
}

std::string ValueTemplate::render(const filter::StreamContext& ctx) const {
  if (parts_.size() == 1 && parts_[0].first == Part::Literal) return parts_[0].second;
  std::string out;
  for (const auto& [part, literal] : parts_) {
    switch (part) {
      case Part::Literal: out += literal; break;
      case Part::RequestId: out += ctx.request_id; break;
      case Part::Route: if (ctx.route) out += ctx.route->name; break;
      case Part::Model: if (ctx.target_model) out += ctx.target_model->name; break;
      case Part::RequestedModel: out += ctx.model; break;
      case Part::PeerIdentity: out += ctx.peer_identity; break;
    }
  }
  return out;
}

void Edits::apply(filter::HeaderList& headers, const filter::StreamContext& ctx) const {
  for (const auto& name : remove) headers.remove(name);
  for (const auto& e : set) {
    if (e.append) headers.add(e.name, e.value.render(ctx));
    else headers.set(e.name, e.value.render(ctx));
  }
}

namespace {

bool validName(std::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name)
    if (c <= 0x20 || c >= 0x7f || c == ':' || c == '"' || c == '(' || c == ')' || c == ',' || c == ';' || c == '\\')
      return false;
  return true;
}

bool parseEdits(simdjson::dom::element side, const std::string& path, Edits& out, std::string& error) {
  simdjson::dom::object obj;
  if (side.get(obj)) {
    error = path + ": must be a mapping of set, add and remove";
    return false;
  }
  for (auto [key, value] : obj) {
    const std::string field = path + "." + std::string(key);
    if (key == "remove") {
      simdjson::dom::array names;
      if (value.get(names)) {
        error = field + ": must be a list of header names";
        return false;
      }
      for (auto n : names) {
        std::string_view name;
        if (n.get(name) || !validName(name)) {
          error = field + ": entries must be header names";
          return false;
        }
        out.remove.emplace_back(name);
      }
    } else if (key == "set" || key == "add") {
      simdjson::dom::object pairs;
      if (value.get(pairs)) {
        error = field + ": must map header names to values";
        return false;
      }
      for (auto [name, v] : pairs) {
        std::string_view text;
        if (!validName(name)) {
          error = field + ": \"" + std::string(name) + "\" is not a header name";
          return false;
        }
        if (v.get(text) || text.find_first_of("\r\n") != std::string_view::npos) {
          error = field + "." + std::string(name) + ": must be a string on one line";
          return false;
        }
        Edit e;
        e.name = std::string(name);
        e.append = key == "add";
        if (!e.value.parse(text, error)) {
          error = field + "." + std::string(name) + ": " + error;
          return false;
        }
        out.set.push_back(std::move(e));
      }
    } else {
      error = field + ": unknown field (set, add, remove)";
      return false;
    }
  }
  return true;
}

}  // namespace

bool parseHeadersConfig(std::string_view json, HeadersConfig& out, std::string& error) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(json.data(), json.size()).get(root)) {
    error = "config is not a mapping";
    return false;
  }
  simdjson::dom::object obj;
  if (root.get(obj)) {
    error = "config must be a mapping of request and response";
    return false;
  }
  for (auto [key, value] : obj) {
    if (key == "request") {
      if (!parseEdits(value, "request", out.request, error)) return false;
    } else if (key == "response") {
      if (!parseEdits(value, "response", out.response, error)) return false;
    } else {
      error = std::string(key) + ": unknown field (request, response)";
      return false;
    }
  }
  return true;
}

namespace {

class HeadersFilter final : public filter::StreamFilter {
 public:
  explicit HeadersFilter(const HeadersConfig& config) : config_(config) {}
  filter::FilterStatus onRequestHeaders(filter::StreamContext& ctx, bool) override {
    config_.request.apply(ctx.request.headers, ctx);
    return filter::FilterStatus::Continue;
  }
  filter::FilterStatus onResponseHeaders(filter::StreamContext& ctx, filter::ResponseHead& head, bool) override {
    config_.response.apply(head.headers, ctx);
    return filter::FilterStatus::Continue;
  }

 private:
  const HeadersConfig& config_;
};

class HeadersFactory final : public filter::FilterFactory {
 public:
  explicit HeadersFactory(HeadersConfig config) : config_(std::move(config)) {}
  std::unique_ptr<filter::StreamFilter> create() const override { return std::make_unique<HeadersFilter>(config_); }

 private:
  const HeadersConfig config_;
};

std::shared_ptr<const filter::FilterFactory> build(std::string_view json, std::string& error) {
  HeadersConfig config;
  if (!parseHeadersConfig(json.empty() ? "{}" : json, config, error)) return nullptr;
  return std::make_shared<HeadersFactory>(std::move(config));
}

const filter::Registration kRegistered{"headers", &build};

}  // namespace
}  // namespace infermesh::headers
