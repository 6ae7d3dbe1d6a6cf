#pragma once

#include <string>
#include <string_view>

namespace infermesh::common {

// What to do with %2F and %5C (an encoded '/' or '\') in a path. Backends
// disagree on whether they separate segments, so by default they are refused.
enum class EscapedSlashes { Reject, Keep, Decode };

struct PathNormalization {
  bool merge_slashes = true;
  EscapedSlashes escaped_slashes = EscapedSlashes::Reject;
};

struct NormalizedTarget {
  bool unchanged = false;  // the input is already normal; `target` is left empty
  std::string target;     // origin-form: normalised path, then "?query" as received
  std::string authority;  // host[:port] of an absolute-form target, else empty
  std::string error;      // why the target was refused; empty on success
};

// Normalises a request target before routes see it, so that the path a
// route matches is the path the model server receives:
//  - absolute-form ("http://host/p?q") becomes origin-form ("/p?q");
//  - percent-encoded unreserved characters are decoded (RFC 3986 6.2.2.2)
//    and other escapes upper-cased (6.2.2.1); a malformed escape is refused;
//  - "." and ".." segments are removed (RFC 3986 5.2.4), and repeated
//    slashes merged when `merge_slashes` is on;
//  - %2F and %5C are refused, kept or decoded to '/' per `escaped_slashes`;
//  - a raw '\', '#', control character, space or byte >= 0x80 is refused.
// The query is checked for the same raw bytes but otherwise left as is.
// "*" (asterisk-form, OPTIONS) is passed through.
NormalizedTarget normalizeTarget(std::string_view target, const PathNormalization& options);

}  // namespace infermesh::common
