#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "proto/time.hpp"
#include "telemetry/metrics.hpp"

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

// Percentiles over the most recent 2 048 samples, exact whatever their order (they are selected, not sorted).
TEST(Metrics, LatencyPercentilesAreThoseOfTheRecentSamplesInAnyOrder) {
  sw::latency_recorder r;
  std::vector<double> all;
  std::uint32_t x = 12345;
  for (int i = 0; i < 5000; ++i) {
    x = x * 1103515245u + 12345u;
    all.push_back(static_cast<double>(x % 100'000) / 10);
    r.add(all.back());
  }
  std::vector<double> recent(all.end() - 2048, all.end());
  std::sort(recent.begin(), recent.end());
  auto at = [&](double q) { return recent[static_cast<std::size_t>(q * 2047 + 0.5)]; };
  auto s = r.summary();
  EXPECT_DOUBLE_EQ(s.p50, at(0.50));
  EXPECT_DOUBLE_EQ(s.p95, at(0.95));
  EXPECT_DOUBLE_EQ(s.p99, at(0.99));
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

// Every counted error is logged, at most once a second per kind, and the lines left out are counted in the next.
TEST(Metrics, ErrorsAndNotesAreLoggedOncePerSecondPerKind) {
  sw::metrics m;
  std::vector<std::pair<bool, std::string>> lines;
  m.set_log([&](bool error, const std::string& line) { lines.emplace_back(error, line); });
  for (int i = 0; i < 5; ++i) m.error("gladia: stream 7 room=r: connection lost");
  m.error("persistence: the database does not answer");
  for (int i = 0; i < 3; ++i) m.note("audio.invalid_frames", "stream 7 room=r: invalid audio frame of 3 bytes");
  m.note("audio.rate_limited_frames", "stream 8 room=r: audio faster than 2x real time");
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_TRUE(lines[0].first);
  EXPECT_EQ(lines[0].second, "gladia: stream 7 room=r: connection lost");
  EXPECT_EQ(lines[1].second, "persistence: the database does not answer");
  EXPECT_FALSE(lines[2].first);
  EXPECT_EQ(lines[2].second, "stream 7 room=r: invalid audio frame of 3 bytes");
  EXPECT_EQ(m.total_errors.load(), 6u);
  EXPECT_EQ(m.read().counters.at("audio.invalid_frames"), 3u);
  EXPECT_EQ(m.read().counters.count("audio.rate_limited_frames"), 1u);
}

// An error about a stream names the stream first, so its message cannot be its kind: an upstream's outage times out
// every stream at once, and the log has one line for all of them (the next, a second on, says how many it left out).
TEST(Metrics, ErrorsOfOneKindFromManyStreamsAreOneLine) {
  sw::metrics m;
  std::vector<std::pair<bool, std::string>> lines;
  m.set_log([&](bool error, const std::string& line) { lines.emplace_back(error, line); });
  for (int i = 0; i < 50; ++i)
    m.error("gladia.ack_timeouts",
            "gladia: stream " + std::to_string(i) + " room=r: nothing acknowledged for 10000 ms");
  m.error("gladia.init_failures", "gladia: stream 50 room=r: Gladia init failed with HTTP 503");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(lines[0].first && lines[1].first);
  EXPECT_EQ(lines[0].second, "gladia: stream 0 room=r: nothing acknowledged for 10000 ms");
  EXPECT_EQ(lines[1].second, "gladia: stream 50 room=r: Gladia init failed with HTTP 503");
  EXPECT_EQ(m.total_errors.load(), 51u) << "each is counted";
  EXPECT_EQ(m.read().last_error, "gladia: stream 50 room=r: Gladia init failed with HTTP 503");
}

// What the throttle left out is counted a second after its last line, without waiting for the kind's next line
// (which may come with the next outage, or never): a line per kind, at its level, once.
TEST(Metrics, WhatTheThrottleLeftOutIsCountedASecondLater) {
  sw::metrics m;
  std::vector<std::pair<bool, std::string>> lines;
  m.set_log([&](bool error, const std::string& line) { lines.emplace_back(error, line); });
  for (int i = 0; i < 5; ++i) m.error("gladia.ack_timeouts", "gladia: stream " + std::to_string(i) + ": no ack");
  for (int i = 0; i < 3; ++i) m.note("audio.invalid_frames", "stream 7 room=r: invalid audio frame of 3 bytes");
  m.error("persistence: the database does not answer");
  ASSERT_EQ(lines.size(), 3u);
  const auto now = sw::now_ms();
  m.flush_suppressed(now);
  EXPECT_EQ(lines.size(), 3u) << "not within the second of the last line";
  m.flush_suppressed(now + 1000);
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_FALSE(lines[3].first);
  EXPECT_EQ(lines[3].second, "audio.invalid_frames: 2 more of this kind in the last seconds, not logged one by one");
  EXPECT_TRUE(lines[4].first);
  EXPECT_EQ(lines[4].second, "gladia.ack_timeouts: 4 more of this kind in the last seconds, not logged one by one");
  m.flush_suppressed(now + 5000);
  EXPECT_EQ(lines.size(), 5u) << "each count once";
}

TEST(Metrics, Iso8601) {
  EXPECT_EQ(sw::iso8601(0), "1970-01-01T00:00:00.000Z");
}

}  // namespace
