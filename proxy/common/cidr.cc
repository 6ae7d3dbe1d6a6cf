#include "proxy/common/cidr.h"

#include <arpa/inet.h>

#include <charconv>
#include <string>

namespace infermesh::common {
namespace {

// As IPv6 (IPv4 mapped into ::ffff:0:0/96); false when not an address.
bool parseAddress(std::string_view text, std::array<std::uint8_t, 16>& out, bool& v4) {
  const std::string s(text);
  std::uint8_t v4bytes[4];
  if (::inet_pton(AF_INET, s.c_str(), v4bytes) == 1) {
    out = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4bytes[0], v4bytes[1], v4bytes[2], v4bytes[3]};
    v4 = true;
    return true;
  }
  v4 = false;
  return ::inet_pton(AF_INET6, s.c_str(), out.data()) == 1;
}

bool samePrefix(const std::array<std::uint8_t, 16>& a, const std::array<std::uint8_t, 16>& b, int bits) {
  int i = 0;
  for (; bits >= 8; bits -= 8, ++i)
    if (a[i] != b[i]) return false;
  if (bits == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xff << (8 - bits));
  return (a[i] & mask) == (b[i] & mask);
}

}  // namespace

std::optional<Cidr> parseCidr(std::string_view text) {
  const auto slash = text.find('/');
  Cidr net;
  bool v4 = false;
  if (!parseAddress(text.substr(0, slash), net.network, v4)) return std::nullopt;
  const int max_bits = v4 ? 32 : 128;
  int bits = max_bits;
  if (slash != std::string_view::npos) {
    const std::string_view len = text.substr(slash + 1);
    const auto [end, ec] = std::from_chars(len.data(), len.data() + len.size(), bits);
    if (ec != std::errc() || end != len.data() + len.size() || len.empty() || bits < 0 || bits > max_bits)
      return std::nullopt;
  }
  net.prefix_bits = v4 ? bits + 96 : bits;
  return net;
}

bool cidrContains(const Cidr& net, std::string_view ip) {
  std::array<std::uint8_t, 16> addr{};
  bool v4 = false;
  return parseAddress(ip, addr, v4) && samePrefix(addr, net.network, net.prefix_bits);
}

}  // namespace infermesh::common
