#pragma once

#include <string>
#include <string_view>

#include "proxy/filter/stream_context.h"

namespace infermesh::config {
struct TenantConfig;
}

namespace infermesh::filter {

// Who the caller is, as the authn filter established it; read by authz,
// telemetry, token limits and the cache (each scopes by tenant).
struct Identity {
  enum class Method : std::uint8_t { None, ApiKey, Jwt, Mtls };
  Method method = Method::None;
  std::string principal;  // "<tenant>/<key name>", "<iss>#<sub>" or a SPIFFE ID
  const config::TenantConfig* tenant = nullptr;
  // Why authentication refused the request (a reason code), else empty.
  std::string failure;
};

const char* methodName(Identity::Method m);

// The stream's identity slot (written by authn).
extern const StateKey<Identity> kIdentity;

}  // namespace infermesh::filter
