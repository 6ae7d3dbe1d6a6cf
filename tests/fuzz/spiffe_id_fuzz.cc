// SPIFFE IDs from client certificates, checked against allow lists, and
// the x-forwarded-client-cert value quoting. Input: ID, then a NUL, then
// an allow-list pattern.

#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "proxy/common/spiffe_id.h"

using namespace infermesh::common;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const auto cut = in.find('\0');
  const std::string_view id = in.substr(0, cut);
  const std::string_view pattern = cut == std::string_view::npos ? std::string_view{} : in.substr(cut + 1);

  const bool valid = validSpiffeId(id);
  const bool pattern_ok = spiffePatternError(pattern).empty();
  if (valid) {
    FUZZ_CHECK(id.starts_with("spiffe://") && id.size() <= 2048 && !id.ends_with("/"));
    FUZZ_CHECK(spiffePatternError(id).empty());  // a valid ID is a valid exact entry
    FUZZ_CHECK(spiffeIdMatches(id, id));
    if (pattern_ok && spiffeIdMatches(id, pattern)) {
      // An entry matches the ID itself or whole segments below it.
      FUZZ_CHECK(pattern == id || (pattern.ends_with("/") && id.starts_with(pattern)));
    }
  }
  // XFCC quoting: either the value as is (nothing to quote) or a quoted
  // string whose unescaped content is the value.
  const std::string q = xfccValue(id);
  if (q == id) {
    FUZZ_CHECK(id.find_first_of(",;=\"") == std::string_view::npos);
  } else {
    FUZZ_CHECK(q.size() >= 2 && q.front() == '"' && q.back() == '"');
    std::string unq;
    for (std::size_t i = 1; i + 1 < q.size(); ++i) {
      if (q[i] == '\\') ++i;
      else FUZZ_CHECK(q[i] != '"');
      FUZZ_CHECK(i + 1 < q.size());
      unq += q[i];
    }
    FUZZ_CHECK(unq == id);
  }
  return 0;
}
