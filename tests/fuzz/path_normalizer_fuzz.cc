// Request targets from clients, normalised before any route matches.
// Input: one byte of options, then the target.

#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "proxy/common/path_normalizer.h"

using namespace infermesh::common;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  PathNormalization options;
  options.merge_slashes = data[0] & 1;
  options.escaped_slashes = static_cast<EscapedSlashes>((data[0] >> 1) % 3);
  const std::string_view target(reinterpret_cast<const char*>(data + 1), size - 1);

  const NormalizedTarget n = normalizeTarget(target, options);
  if (!n.error.empty()) return 0;
  const std::string out = n.unchanged ? std::string(target) : n.target;
  if (out == "*") return 0;
  // Origin-form, free of dot segments and of the raw bytes refused on
  // input; and normal: normalising it again changes nothing.
  FUZZ_CHECK(!out.empty() && out[0] == '/');
  const std::string path = out.substr(0, out.find('?'));
  FUZZ_CHECK(path.find("/./") == std::string::npos && path.find("/../") == std::string::npos);
  FUZZ_CHECK(!path.ends_with("/.") && !path.ends_with("/.."));
  if (options.merge_slashes) FUZZ_CHECK(path.find("//") == std::string::npos);
  for (unsigned char c : out) FUZZ_CHECK(c > 0x20 && c < 0x7f && c != '\\' && c != '#');
  const NormalizedTarget again = normalizeTarget(out, options);
  FUZZ_CHECK(again.error.empty());
  // Decoding %2F makes new separators, which may then merge or form dot
  // segments: one pass is what the proxy does, so only the other modes
  // must be idempotent.
  if (options.escaped_slashes != EscapedSlashes::Decode) FUZZ_CHECK(again.unchanged || again.target == out);
  return 0;
}
