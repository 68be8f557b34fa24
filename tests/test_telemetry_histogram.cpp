// The load histogram (telemetry/histogram.hpp): percentiles of known data within its bucket resolution.
#include <random>

#include <gtest/gtest.h>

#include "telemetry/histogram.hpp"

namespace {

TEST(Histogram, PercentilesOfKnownDataAreWithinTheBucketResolution) {
  sw::histogram h;
  for (int i = 1; i <= 10'000; ++i) h.add_us(i);  // 1 µs .. 10 ms, uniform
  EXPECT_EQ(h.count(), 10'000u);
  EXPECT_NEAR(h.quantile_us(0.5), 5'000, 5'000 * 0.07);
  EXPECT_NEAR(h.quantile_us(0.99), 9'900, 9'900 * 0.07);
  EXPECT_NEAR(h.quantile_us(0.999), 9'990, 9'990 * 0.07);
  EXPECT_EQ(h.quantile_us(1.0), 10'000) << "capped at the largest sample";
  EXPECT_DOUBLE_EQ(h.max_us(), 10'000);
  EXPECT_NEAR(h.mean_us(), 5'000.5, 1e-6);
}

TEST(Histogram, ATailIsNotHiddenAndMergingAddsUp) {
  sw::histogram a, b;
  for (int i = 0; i < 990; ++i) a.add_us(500);
  for (int i = 0; i < 10; ++i) b.add_us(250'000);  // 1 % at 250 ms
  a.merge(b);
  EXPECT_EQ(a.count(), 1'000u);
  EXPECT_NEAR(a.quantile_us(0.99), 500, 500 * 0.07) << "the 990th sample is still 500 µs";
  EXPECT_NEAR(a.quantile_us(0.995), 250'000, 250'000 * 0.07);
  sw::histogram tiny;
  tiny.add_us(0.2);
  tiny.add_ns(-5);  // a clock step: counted, never a crash
  EXPECT_EQ(tiny.count(), 2u);
  EXPECT_LE(tiny.quantile_us(0.5), 1);
  EXPECT_EQ(sw::histogram().quantile_us(0.99), 0);
}

}  // namespace
