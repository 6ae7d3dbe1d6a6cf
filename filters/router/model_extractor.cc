#include "filters/router/model_extractor.h"

#include <simdjson.h>

#include "proxy/common/json_string.h"

namespace infermesh::router {

struct ModelExtractor::Impl {
  simdjson::dom::parser parser;
};

ModelExtractor::ModelExtractor() : impl_(new Impl) {}
ModelExtractor::~ModelExtractor() { delete impl_; }

const char* describe(ExtractError e) {
  switch (e) {
    case ExtractError::None: return "ok";
    case ExtractError::InvalidJson: return "request body is not valid JSON";
    case ExtractError::NotAnObject: return "request body must be a JSON object";
    case ExtractError::ModelNotString: return "\"model\" must be a string";
    case ExtractError::StreamNotBool: return "\"stream\" must be a boolean";
    case ExtractError::DuplicateModel: return "request body names \"model\" more than once";
  }
  return "unknown";
}

void ModelExtractor::ensurePadding(std::string& body) {
  if (body.capacity() < body.size() + simdjson::SIMDJSON_PADDING) body.reserve(body.size() + simdjson::SIMDJSON_PADDING);
}

ExtractError ModelExtractor::extract(const std::string& body, BodyFields& out) {
  simdjson::dom::element doc;
  const bool padded = body.capacity() >= body.size() + simdjson::SIMDJSON_PADDING;
  if (impl_->parser.parse(body.data(), body.size(), /*realloc_if_needed=*/!padded).get(doc))
    return ExtractError::InvalidJson;
  simdjson::dom::object obj;
  if (doc.get_object().get(obj)) return ExtractError::NotAnObject;
  bool have_model = false;
  for (auto field : obj) {
    // dom keys are already unescaped, so every spelling of `model` lands here.
    if (field.key == "model") {
      if (have_model) return ExtractError::DuplicateModel;
      have_model = true;
      std::string_view m;
      if (field.value.get_string().get(m)) return ExtractError::ModelNotString;
      out.model.assign(m);
    } else if (field.key == "stream") {
      if (field.value.is_null()) continue;
      bool b = false;
      if (field.value.get_bool().get(b)) return ExtractError::StreamNotBool;
      out.stream = b;
    }
  }
  return ExtractError::None;
}

bool ModelExtractor::rewriteModel(std::string& body, std::string_view model) {
  // The body was validated by extract(); the on-demand parser gives the raw
  // token of the value, which is replaced in place.
  simdjson::ondemand::parser parser;
  simdjson::padded_string padded(body);
  simdjson::ondemand::document doc;
  if (parser.iterate(padded).get(doc)) return false;
  simdjson::ondemand::object obj;
  if (doc.get_object().get(obj)) return false;
  for (auto field : obj) {
    std::string_view key;
    if (field.unescaped_key().get(key) || key != "model") continue;
    simdjson::ondemand::value v;
    if (field.value().get(v)) return false;
    std::string_view raw = v.raw_json_token();
    if (raw.empty() || raw[0] != '"') return false;
    // raw_json_token may include trailing whitespace; keep it.
    std::size_t end = raw.find_last_of('"');
    std::size_t offset = static_cast<std::size_t>(raw.data() - padded.data());
    // Fully escaped (control characters too, invalid UTF-8 as U+FFFD): the
    // name comes from config, and what goes upstream must stay JSON.
    std::string replacement;
    common::appendJsonString(replacement, model);
    body.replace(offset, end + 1, replacement);
    return true;
  }
  return false;
}

}  // namespace infermesh::router
