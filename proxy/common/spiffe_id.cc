#include "proxy/common/spiffe_id.h"

namespace infermesh::common {
namespace {

constexpr std::string_view kScheme = "spiffe://";
constexpr std::size_t kMaxId = 2048;
constexpr std::size_t kMaxTrustDomain = 255;

bool trustDomainChar(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_'; }
bool pathChar(char c) { return trustDomainChar(c) || (c >= 'A' && c <= 'Z'); }

}  // namespace

std::string spiffeIdError(std::string_view id) {
  if (!id.starts_with(kScheme)) return "must start with spiffe://";
  if (id.size() > kMaxId) return "longer than 2048 bytes";
  std::string_view rest = id.substr(kScheme.size());
  const auto slash = rest.find('/');
  const std::string_view domain = rest.substr(0, slash);
  if (domain.empty()) return "has no trust domain";
  if (domain.size() > kMaxTrustDomain) return "trust domain longer than 255 bytes";
  for (char c : domain)
    if (!trustDomainChar(c)) return "trust domain may hold only lower-case letters, digits, '.', '-' and '_'";
  if (slash == std::string_view::npos) return {};
  std::string_view path = rest.substr(slash);
  while (!path.empty()) {
    path.remove_prefix(1);  // the '/'
    const auto next = path.find('/');
    const std::string_view seg = path.substr(0, next);
    if (seg.empty()) return "path has an empty segment or a trailing '/'";
    if (seg == "." || seg == "..") return "path has a '.' or '..' segment";
    for (char c : seg)
      if (!pathChar(c)) return "path may hold only letters, digits, '.', '-' and '_'";
    path = next == std::string_view::npos ? std::string_view() : path.substr(next);
  }
  return {};
}

std::string spiffePatternError(std::string_view pattern) {
  if (pattern.ends_with('/')) pattern.remove_suffix(1);
  return spiffeIdError(pattern);
}

bool spiffeIdMatches(std::string_view id, std::string_view pattern) {
  if (!pattern.ends_with('/')) return id == pattern;
  // The ID is valid, so its segments hold no "." or "..": a byte prefix that
  // ends at a '/' is a prefix of whole segments.
  return id.size() > pattern.size() && id.starts_with(pattern);
}

bool spiffeIdAllowed(std::string_view id, const std::vector<std::string>& allowed) {
  for (const auto& a : allowed)
    if (spiffeIdMatches(id, a)) return true;
  return false;
}

std::string xfccValue(std::string_view value) {
  if (value.find_first_of(",;=\"") == std::string_view::npos) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

}  // namespace infermesh::common
