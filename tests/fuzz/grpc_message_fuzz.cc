// gRPC message framing and the Open Inference Protocol model name: the
// first message's field 1 is read for routing, then replaced by the
// upstream model name. Input: one byte that splits off the new name (its
// length), then the gRPC-framed body. The grpc-timeout header parser gets
// the body too.

#include <cstdint>
#include <string>

#include "filters/router/grpc_message.h"
#include "fuzz_check.h"

using namespace infermesh::router;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t model_len = std::min<std::size_t>(data[0] % 64, size - 1);
  const std::string new_model(reinterpret_cast<const char*>(data + 1), model_len);
  std::string body(reinterpret_cast<const char*>(data + 1 + model_len), size - 1 - model_len);

  if (auto t = parseGrpcTimeout(body)) FUZZ_CHECK(t->count() >= 0);

  std::string model;
  bool repeated = false;
  const bool named = oipModelName(body, model, repeated);
  if (named) FUZZ_CHECK(model.size() + 5 < body.size() + 1);

  std::string rewritten = body;
  if (!rewriteOipModelName(rewritten, new_model)) {
    FUZZ_CHECK(rewritten == body);  // refused: left as it was
    return 0;
  }
  // One message, correctly framed, naming exactly the new model once.
  FUZZ_CHECK(rewritten.size() >= 5 && rewritten[0] == 0);
  const std::uint32_t len = (std::uint32_t(std::uint8_t(rewritten[1])) << 24) |
                            (std::uint32_t(std::uint8_t(rewritten[2])) << 16) |
                            (std::uint32_t(std::uint8_t(rewritten[3])) << 8) | std::uint8_t(rewritten[4]);
  FUZZ_CHECK(len + 5 == rewritten.size());
  std::string after;
  bool after_repeated = true;
  FUZZ_CHECK(oipModelName(rewritten, after, after_repeated));
  FUZZ_CHECK(after == new_model);
  FUZZ_CHECK(!after_repeated);
  // Rewriting again changes nothing.
  std::string twice = rewritten;
  FUZZ_CHECK(rewriteOipModelName(twice, new_model));
  FUZZ_CHECK(twice == rewritten);
  return 0;
}
