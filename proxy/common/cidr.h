#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace infermesh::common {

// An IPv4 or IPv6 network ("10.0.0.0/8", "::1/128"; a bare address is a
// host route). IPv4 is kept as IPv4-mapped IPv6, so "127.0.0.1/32" also
// matches a dual-stack socket's "::ffff:127.0.0.1".
struct Cidr {
  std::array<std::uint8_t, 16> network{};
  int prefix_bits = 0;  // of the 128
};

std::optional<Cidr> parseCidr(std::string_view text);
// Whether `ip` (an address as text) is inside `net`; false when unparsable.
bool cidrContains(const Cidr& net, std::string_view ip);

}  // namespace infermesh::common
