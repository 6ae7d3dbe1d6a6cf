#include "proxy/common/cidr.h"

#include <gtest/gtest.h>

namespace infermesh::common {
namespace {

TEST(Cidr, MatchesIpv4Networks) {
  auto net = parseCidr("10.1.0.0/16");
  ASSERT_TRUE(net);
  EXPECT_TRUE(cidrContains(*net, "10.1.200.3"));
  EXPECT_FALSE(cidrContains(*net, "10.2.0.1"));
  EXPECT_TRUE(cidrContains(*net, "::ffff:10.1.0.9"));  // dual-stack socket
  auto host = parseCidr("127.0.0.1");
  ASSERT_TRUE(host);
  EXPECT_TRUE(cidrContains(*host, "127.0.0.1"));
  EXPECT_FALSE(cidrContains(*host, "127.0.0.2"));
  auto odd = parseCidr("192.168.1.128/25");
  ASSERT_TRUE(odd);
  EXPECT_TRUE(cidrContains(*odd, "192.168.1.200"));
  EXPECT_FALSE(cidrContains(*odd, "192.168.1.127"));
  EXPECT_TRUE(cidrContains(*parseCidr("0.0.0.0/0"), "8.8.8.8"));
}

TEST(Cidr, MatchesIpv6Networks) {
  auto net = parseCidr("fd00::/8");
  ASSERT_TRUE(net);
  EXPECT_TRUE(cidrContains(*net, "fd12::1"));
  EXPECT_FALSE(cidrContains(*net, "fe80::1"));
  EXPECT_FALSE(cidrContains(*net, "10.0.0.1"));
  EXPECT_FALSE(cidrContains(*net, "not an ip"));
}

TEST(Cidr, RefusesMalformed) {
  for (const char* bad : {"", "10.0.0.0/33", "10.0.0.0/", "10.0.0/8", "::/129", "host/8", "10.0.0.0/8x", "10.0.0.0/-1"})
    EXPECT_FALSE(parseCidr(bad)) << bad;
}

}  // namespace
}  // namespace infermesh::common
