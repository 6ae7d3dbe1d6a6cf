// JSON string escaping of client-controlled bytes (access log fields,
// error messages): the result must always be one valid JSON string that
// decodes to the input when the input is UTF-8.

#include <simdjson.h>

#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "proxy/common/json_string.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  std::string out;
  infermesh::common::appendJsonString(out, in);
  static simdjson::dom::parser parser;
  simdjson::dom::element doc;
  FUZZ_CHECK(!parser.parse(out).get(doc));
  std::string_view decoded;
  FUZZ_CHECK(!doc.get_string().get(decoded));
  if (simdjson::validate_utf8(in.data(), in.size())) {
    // DEL is escaped but decodes back to itself.
    FUZZ_CHECK(decoded == in);
  } else {
    FUZZ_CHECK(decoded.size() >= 1);
  }
  return 0;
}
