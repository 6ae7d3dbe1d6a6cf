#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace infermesh::common {

// SPIFFE IDs (SPIFFE-ID specification, sections 2 and 5): pure string
// checks, no OpenSSL, so the config compiler uses them too.

// Why `id` is not a valid SPIFFE ID, or "" when it is: scheme "spiffe://",
// a trust domain of [a-z0-9._-] (lower case, at most 255 bytes), then
// optionally a path of "/"-separated segments of [A-Za-z0-9._-], none empty,
// "." or ".."; no trailing "/", query, fragment, port or user info; at most
// 2048 bytes.
std::string spiffeIdError(std::string_view id);
inline bool validSpiffeId(std::string_view id) { return spiffeIdError(id).empty(); }

// Why an allow-list entry is unusable, or "": a valid ID (matched exactly)
// or a valid ID followed by "/" (a prefix of whole path segments).
std::string spiffePatternError(std::string_view pattern);

// Whether a valid ID matches one entry: exactly, or for an entry ending in
// "/", as a descendant ("spiffe://td/ns/apps/" matches
// "spiffe://td/ns/apps/sa/x" but never "spiffe://td/ns/apps-admin").
bool spiffeIdMatches(std::string_view id, std::string_view pattern);
bool spiffeIdAllowed(std::string_view id, const std::vector<std::string>& allowed);

// One value of an x-forwarded-client-cert element, quoted as Envoy's format
// defines when it holds ',', ';', '=' or '"' (inner quotes and backslashes
// escaped with '\'), else as is.
std::string xfccValue(std::string_view value);

}  // namespace infermesh::common
