#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "proxy/filter/stream_context.h"

namespace infermesh::headers {

// A header value with stream-context variables: %REQUEST_ID%, %ROUTE%,
// %MODEL% (the model that serves), %REQUESTED_MODEL% (as the client named
// it) and %PEER_IDENTITY% (the client's SPIFFE ID). Parsed once, at config
// time, into literal and variable parts.
class ValueTemplate {
 public:
  // False, with `error` set, for an unknown %VARIABLE%; "%%" is a "%".
  bool parse(std::string_view text, std::string& error);
  std::string render(const filter::StreamContext& ctx) const;

 private:
  enum class Part : std::uint8_t { Literal, RequestId, Route, Model, RequestedModel, PeerIdentity };
  std::vector<std::pair<Part, std::string>> parts_;
};

struct Edit {
  std::string name;
  ValueTemplate value;
  bool append = false;  // add beside what is there, instead of replacing it
};

// What one direction does, in order: remove, then set, then add.
struct Edits {
  std::vector<std::string> remove;
  std::vector<Edit> set;
  bool empty() const { return remove.empty() && set.empty(); }
  void apply(filter::HeaderList& headers, const filter::StreamContext& ctx) const;
};

struct HeadersConfig {
  Edits request;
  Edits response;
};

// Parses the filter's config (JSON): {request: {set: {name: value},
// add: {name: value}, remove: [name]}, response: {...}}. False, with
// `error` naming the field, on anything else.
bool parseHeadersConfig(std::string_view json, HeadersConfig& out, std::string& error);

}  // namespace infermesh::headers
