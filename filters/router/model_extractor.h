#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace infermesh::router {

// What the router needs from an OpenAI-style JSON request body.
struct BodyFields {
  std::string model;  // unescaped; empty when absent
  bool stream = false;
};

enum class ExtractError { None, InvalidJson, NotAnObject, ModelNotString, StreamNotBool, DuplicateModel };

const char* describe(ExtractError e);

// Validates the whole body as JSON and reads `model` and `stream` from the
// top-level object, in whatever order they appear. A top-level object that
// names `model` twice (also spelled with escapes, "\u006dodel") is refused:
// decoders upstream disagree on which one wins, so the proxy could route by
// one and the backend serve the other. `body` must have at least
// kBodyPadding bytes of capacity past its size (the fast parser reads ahead);
// ensurePadding() arranges that. Keeps its parser buffers between calls, so
// use one per thread.
class ModelExtractor {
 public:
  ModelExtractor();
  ~ModelExtractor();
  ExtractError extract(const std::string& body, BodyFields& out);

  // Replaces the top-level `model` value with `model` (JSON-escaped). Returns
  // false when the body has no top-level string `model`.
  static bool rewriteModel(std::string& body, std::string_view model);

  static void ensurePadding(std::string& body);

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace infermesh::router
