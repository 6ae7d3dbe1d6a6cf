// Operator YAML, as the proxy and the control plane read it: the loader
// (YAML to the protobuf specs, with line numbers) and then the compiler
// (semantic checks, the immutable snapshot).

#include <cstdint>
#include <string_view>

#include "fuzz_check.h"
#include "router_stand_in.h"
#include "proxy/config/compiler.h"
#include "proxy/config/yaml_loader.h"

using namespace infermesh::config;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  infermesh::fuzz::registerRouterStandIn();
  YamlLoader loader;
  loader.loadText(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.yaml");
  for (const auto& e : loader.errors()) FUZZ_CHECK(!e.message.empty());
  if (!loader.errors().empty()) return 0;
  const CompileResult r = compile(loader.resources(), 1);
  FUZZ_CHECK((r.snapshot == nullptr) != r.errors.empty());
  return 0;
}
