#include <gtest/gtest.h>

#include "actors/metrics.hpp"

namespace {

TEST(Metrics, LatencyPercentiles) {
  sw::latency_recorder r;
  for (int i = 1; i <= 100; ++i) r.add(i);
  auto s = r.summary();
  EXPECT_EQ(s.count, 100u);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 100);
  EXPECT_DOUBLE_EQ(s.avg, 50.5);
  EXPECT_NEAR(s.p50, 50.5, 1);
  EXPECT_NEAR(s.p99, 99, 1);
}

TEST(Metrics, ActorProbeCountsLiveAndProcessed) {
  auto m = std::make_shared<sw::metrics>();
  {
    sw::actor_probe p(m, "k");
    EXPECT_EQ(m->actor_kind("k").live.load(), 1);
    p.handled(7, std::chrono::steady_clock::now());
    EXPECT_EQ(m->actor_kind("k").mailbox_sum.load(), 7);
    EXPECT_EQ(m->actor_kind("k").mailbox_max.load(), 7);
    EXPECT_EQ(m->actor_kind("k").processed.load(), 1u);
  }
  EXPECT_EQ(m->actor_kind("k").live.load(), 0);
  EXPECT_EQ(m->actor_kind("k").mailbox_sum.load(), 0);
  EXPECT_EQ(m->actor_kind("k").spawned.load(), 1u);
}

TEST(Metrics, Iso8601) {
  EXPECT_EQ(sw::iso8601(0), "1970-01-01T00:00:00.000Z");
}

}  // namespace
