#pragma once

// The config compiler asks the filter registry for every filter a listener
// names. The real router filter pulls in the whole runtime, so the config
// fuzz targets register a stand-in under its name that accepts and refuses
// exactly the configs registerRouterFilter() does (none: "{}" or empty) and
// is terminal; no stream is ever created from it. authn and authz (named
// by the demo's chain, which the xDS target loads) get non-terminal
// stand-ins the same way: their settings are Policy resources. ratelimit
// and telemetry get stand-ins that take any config (limits are Tenant,
// Route and Model fields, which the compiler checks; the filters' own
// settings are theirs to check).

#include <memory>

#include "proxy/filter/filter.h"

namespace infermesh::fuzz {

inline void registerRouterStandIn() {
  struct Factory final : filter::FilterFactory {
    std::unique_ptr<filter::StreamFilter> create() const override { return nullptr; }
    bool terminal() const override { return true; }
  };
  struct PassFactory final : filter::FilterFactory {
    std::unique_ptr<filter::StreamFilter> create() const override { return nullptr; }
  };
  static const bool done = [] {
    filter::FilterRegistry::instance().add(
        "router", [](std::string_view config_json, std::string& error) -> std::shared_ptr<const filter::FilterFactory> {
          if (config_json != "{}" && !config_json.empty()) {
            error = "the router filter takes no config";
            return nullptr;
          }
          return std::make_shared<Factory>();
        });
    for (const char* name : {"authn", "authz"})
      filter::FilterRegistry::instance().add(
          name, [](std::string_view config_json, std::string& error) -> std::shared_ptr<const filter::FilterFactory> {
            if (config_json != "{}" && !config_json.empty()) {
              error = "takes its settings from Policy resources";
              return nullptr;
            }
            return std::make_shared<PassFactory>();
          });
    for (const char* name : {"ratelimit", "telemetry"})
      filter::FilterRegistry::instance().add(
          name, [](std::string_view, std::string&) -> std::shared_ptr<const filter::FilterFactory> {
            return std::make_shared<PassFactory>();
          });
    return true;
  }();
  (void)done;
}

}  // namespace infermesh::fuzz
