#include "proxy/common/path_normalizer.h"

#include <vector>

namespace infermesh::common {
namespace {

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

// Bytes no origin-form target may carry raw: controls, space, DEL, non-ASCII
// (RFC 3986 allows none of them), '#' (a fragment is never sent) and '\'
// (some servers treat it as a separator).
bool refusedRaw(unsigned char c) { return c <= 0x20 || c >= 0x7f || c == '#' || c == '\\'; }

bool startsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
    if (c != prefix[i]) return false;
  }
  return true;
}

// Whether the path needs the full pass: an escape, a dot segment or an
// empty segment. Most requests skip it.
bool needsWork(std::string_view path) {
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '%') return true;
    if (path[i] == '/' && i + 1 < path.size() && (path[i + 1] == '/' || path[i + 1] == '.')) return true;
  }
  return false;
}

constexpr char kHex[] = "0123456789ABCDEF";

}  // namespace

NormalizedTarget normalizeTarget(std::string_view target, const PathNormalization& options) {
  NormalizedTarget out;
  if (target == "*") {
    out.target = "*";
    return out;
  }
  // The common case, a clean origin-form target, costs one scan and no copy.
  if (!target.empty() && target[0] == '/') {
    bool clean = true;
    bool in_query = false;
    for (std::size_t i = 0; i < target.size() && clean; ++i) {
      const auto c = static_cast<unsigned char>(target[i]);
      in_query = in_query || c == '?';
      clean = !refusedRaw(c) && (in_query || (c != '%' && !(c == '/' && i + 1 < target.size() &&
                                                             (target[i + 1] == '/' || target[i + 1] == '.'))));
    }
    if (clean) {
      out.unchanged = true;
      return out;
    }
  }
  std::string_view rest = target;
  for (std::string_view scheme : {std::string_view("http://"), std::string_view("https://")}) {
    if (!startsWithIgnoreCase(rest, scheme)) continue;
    rest.remove_prefix(scheme.size());
    const auto end = rest.find_first_of("/?");
    out.authority.assign(rest.substr(0, end));
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end);
    if (out.authority.empty() || out.authority.find_first_of("@\\") != std::string::npos) {
      out.error = "absolute-form target without a valid authority";
      return out;
    }
    for (unsigned char c : out.authority)
      if (refusedRaw(c)) {
        out.error = "invalid character in the target's authority";
        return out;
      }
    break;
  }
  if (out.authority.empty() && (rest.empty() || rest[0] != '/')) {
    out.error = "request target must be a path (origin-form) or an absolute URL";
    return out;
  }
  const auto q = rest.find('?');
  const std::string_view path = rest.substr(0, q);
  const std::string_view query = q == std::string_view::npos ? std::string_view() : rest.substr(q);
  for (unsigned char c : query)
    if (refusedRaw(c)) {
      out.error = "invalid character in the query";
      return out;
    }

  std::string decoded;
  decoded.reserve(path.size() + 1);
  if (path.empty()) decoded = "/";
  for (std::size_t i = 0; i < path.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(path[i]);
    if (refusedRaw(c)) {
      out.error = c == '\\' ? "'\\' in the path" : "invalid character in the path";
      return out;
    }
    if (c != '%') {
      decoded += static_cast<char>(c);
      continue;
    }
    const int hi = i + 2 < path.size() ? hexValue(path[i + 1]) : -1;
    const int lo = hi >= 0 ? hexValue(path[i + 2]) : -1;
    if (lo < 0) {
      out.error = "malformed percent-encoding in the path";
      return out;
    }
    i += 2;
    const auto v = static_cast<unsigned char>(hi * 16 + lo);
    if (unreserved(v)) {
      decoded += static_cast<char>(v);
    } else if ((v == '/' || v == '\\') && options.escaped_slashes != EscapedSlashes::Keep) {
      if (options.escaped_slashes == EscapedSlashes::Reject) {
        out.error = "encoded '/' or '\\' (%2F, %5C) in the path";
        return out;
      }
      decoded += '/';
    } else {
      decoded += '%';
      decoded += kHex[hi];
      decoded += kHex[lo];
    }
  }

  if (!needsWork(decoded)) {
    out.target = std::move(decoded);
    out.target.append(query);
    return out;
  }
  // Dot-segment removal over the decoded path (RFC 3986 5.2.4), segment by
  // segment; a trailing "." or ".." leaves a trailing slash, as the RFC does.
  std::vector<std::string_view> segments;
  const std::string_view d = decoded;
  std::size_t start = 1;  // past the leading '/'
  while (true) {
    const auto slash = d.find('/', start);
    const bool last = slash == std::string_view::npos;
    const std::string_view seg = d.substr(start, last ? std::string_view::npos : slash - start);
    if (seg == ".") {
      if (last) segments.emplace_back();
    } else if (seg == "..") {
      if (!segments.empty()) segments.pop_back();
      if (last) segments.emplace_back();
    } else if (!seg.empty() || last || !options.merge_slashes) {
      segments.push_back(seg);
    }
    if (last) break;
    start = slash + 1;
  }
  out.target = "/";
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (i) out.target += '/';
    out.target.append(segments[i]);
  }
  out.target.append(query);
  return out;
}

}  // namespace infermesh::common
