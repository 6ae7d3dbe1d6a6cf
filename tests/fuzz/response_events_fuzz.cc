// Responses from model servers as the core frames and reads them: SSE or
// NDJSON events (forEachEvent) and the token usage read from them or from
// a JSON answer (UsageExtractor). Input: one byte choosing the content
// type, then the body, cut into chunks at 0xFF bytes (as reads arrive).

#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "proxy/filter/filter.h"
#include "proxy/filter/usage.h"

using namespace infermesh::filter;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  static const char* kTypes[] = {"text/event-stream", "application/x-ndjson", "application/json", "text/plain"};
  const char* type = kTypes[data[0] % 4];
  const bool ndjson = data[0] % 4 == 1;
  std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);

  ResponseHead head;
  head.status = 200;
  head.headers.add("content-type", type);
  UsageExtractor extractor;
  extractor.onHeaders(head);
  Usage usage;
  while (!body.empty()) {
    const auto cut = body.find('\xff');
    const std::string_view chunk = body.substr(0, cut);
    body = cut == std::string_view::npos ? std::string_view{} : body.substr(cut + 1);
    std::size_t seen = 0;
    forEachEvent(chunk, ndjson, [&](std::string_view event) {
      // Events are pieces of the chunk, in order, never empty, never
      // holding their own terminator.
      FUZZ_CHECK(!event.empty());
      FUZZ_CHECK(event.data() >= chunk.data() + seen && event.data() + event.size() <= chunk.data() + chunk.size());
      seen = static_cast<std::size_t>(event.data() - chunk.data()) + event.size();
      if (ndjson) FUZZ_CHECK(event.find('\n') == std::string_view::npos);
      FUZZ_CHECK(meterDeltaTokens(event) >= 0);
    });
    extractor.onBody(chunk, body.empty(), usage);
    FUZZ_CHECK(usage.streamed_output >= 0 && usage.input >= -1 && usage.output >= -1);
  }
  return 0;
}
