// The JSON request body: model extraction, then the rewrite the router
// applies when a route names another upstream model. Input: one byte that
// splits off a new model name (its length), then the body.

#include <simdjson.h>

#include <cstdint>
#include <string>

#include "filters/router/model_extractor.h"
#include "fuzz_check.h"

using infermesh::router::BodyFields;
using infermesh::router::ExtractError;
using infermesh::router::ModelExtractor;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::size_t model_len = std::min<std::size_t>(data[0] % 32, size - 1);
  const std::string new_model(reinterpret_cast<const char*>(data + 1), model_len);
  std::string body(reinterpret_cast<const char*>(data + 1 + model_len), size - 1 - model_len);

  static ModelExtractor extractor;
  BodyFields fields;
  // Both paths the proxy takes: a padded body (the usual case) and one
  // without room (the parser copies).
  std::string unpadded = body;
  unpadded.shrink_to_fit();
  BodyFields unpadded_fields;
  const ExtractError unpadded_error = extractor.extract(unpadded, unpadded_fields);
  ModelExtractor::ensurePadding(body);
  const ExtractError error = extractor.extract(body, fields);
  FUZZ_CHECK(error == unpadded_error);
  if (error != ExtractError::None || fields.model.empty()) return 0;

  // The router rewrites only bodies extract() accepted. What it sends must
  // still be JSON naming the new model, whatever bytes the name holds
  // (names come from config; bytes that are not UTF-8 become U+FFFD).
  std::string rewritten = body;
  FUZZ_CHECK(ModelExtractor::rewriteModel(rewritten, new_model));
  BodyFields after;
  ModelExtractor::ensurePadding(rewritten);
  FUZZ_CHECK(extractor.extract(rewritten, after) == ExtractError::None);
  if (simdjson::validate_utf8(new_model.data(), new_model.size())) FUZZ_CHECK(after.model == new_model);
  FUZZ_CHECK(after.stream == fields.stream);
  return 0;
}
