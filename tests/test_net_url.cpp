#include <gtest/gtest.h>

#include "net/url.hpp"

namespace {

TEST(Url, SplitsAndDecodesTargets) {
  std::string path;
  sw::header_list q;
  ASSERT_TRUE(sw::net::split_target("/a%20b?token=x%2Ey&sessionSlug=r+1&flag&=v", path, q));
  EXPECT_EQ(path, "/a b");
  ASSERT_EQ(q.size(), 4u);
  EXPECT_EQ(q[0], (std::pair<std::string, std::string>{"token", "x.y"}));
  EXPECT_EQ(q[1], (std::pair<std::string, std::string>{"sessionSlug", "r 1"}));
  EXPECT_EQ(q[2], (std::pair<std::string, std::string>{"flag", ""}));
  EXPECT_EQ(q[3], (std::pair<std::string, std::string>{"", "v"}));
}

TEST(Url, RejectsBadTargets) {
  std::string path;
  sw::header_list q;
  EXPECT_FALSE(sw::net::split_target("", path, q));
  EXPECT_FALSE(sw::net::split_target("http://x/", path, q));
  EXPECT_FALSE(sw::net::split_target("/a%2", path, q));
  EXPECT_FALSE(sw::net::split_target("/a?x=%zz", path, q));
  EXPECT_FALSE(sw::net::split_target("/a?x=%", path, q));
}

TEST(Url, ParsesUrls) {
  auto u = sw::net::parse_url("wss://example.org/api?x=1");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "example.org");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->target, "/api?x=1");
  EXPECT_TRUE(u->secure());
  u = sw::net::parse_url("http://[::1]:8080");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->target, "/");
  EXPECT_FALSE(sw::net::parse_url("ftp://x/"));
  EXPECT_FALSE(sw::net::parse_url("http://x:99999/"));
  EXPECT_FALSE(sw::net::parse_url("http://u@x/"));
  EXPECT_FALSE(sw::net::parse_url("nourl"));
}

TEST(Url, PercentEncodeRoundTrips) {
  std::string s = "a b/ü?&=";
  EXPECT_EQ(sw::net::percent_decode(sw::net::percent_encode(s), false), s);
}

// Error messages show an address without what may carry a token.
TEST(Url, ShownUrlLeavesOutTheQueryAndFragment) {
  EXPECT_EQ(sw::net::shown_url("wss://api.gladia.io/v2/live?token=secret"), "wss://api.gladia.io/v2/live?…");
  EXPECT_EQ(sw::net::shown_url("http://h/demo#token=secret"), "http://h/demo?…");
  EXPECT_EQ(sw::net::shown_url("ws://h:3001"), "ws://h:3001");
  EXPECT_EQ(sw::net::shown_url(""), "");
}

}  // namespace
