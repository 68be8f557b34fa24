#include <gtest/gtest.h>

#include "actors/audio_guard.hpp"

namespace {

using sw::audio_guard;
using sw::frame_verdict;
using sw::text_guard;
using sw::text_verdict;
using ms = std::chrono::milliseconds;

TEST(AudioGuard, FrameSizes) {
  auto t = audio_guard::clock::now();
  audio_guard g(t);
  EXPECT_EQ(g.check(0, t), frame_verdict::invalid);
  EXPECT_EQ(g.check(1, t), frame_verdict::invalid);
  EXPECT_EQ(g.check(3, t), frame_verdict::invalid);
  EXPECT_EQ(g.check(3201, t), frame_verdict::invalid);
  EXPECT_EQ(g.check(65'538, t), frame_verdict::invalid);
  EXPECT_EQ(g.check(2, t), frame_verdict::accept);
  EXPECT_EQ(g.check(65'536, t), frame_verdict::accept);
}

TEST(AudioGuard, InvalidFramesCostNoBytes) {
  auto t = audio_guard::clock::now();
  audio_guard g(t);
  g.check(3, t);
  EXPECT_EQ(g.tokens(), audio_guard::capacity);
}

// An invalid frame costs the server as much as a valid one: a client sending 1-byte frames took a whole core and was
// never closed.
TEST(AudioGuard, InvalidFramesCountForTheirNumberAndFloodToo) {
  auto t = audio_guard::clock::now();
  audio_guard g(t);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(g.check(1, t), frame_verdict::invalid) << i;
  for (int i = 1; i < 1000; ++i) ASSERT_EQ(g.check(1, t), frame_verdict::too_many_frames) << i;
  EXPECT_EQ(g.check(1, t), frame_verdict::flood);
}

TEST(AudioGuard, BucketIsFullAtConnectAndThenRefillsAtTwiceRealTime) {
  auto t = audio_guard::clock::now();
  audio_guard g(t);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(g.check(3200, t), frame_verdict::accept) << i;  // 320 000 B burst
  EXPECT_EQ(g.check(2, t), frame_verdict::rate_limited);
  t += ms(100);  // 6 400 B refilled
  EXPECT_EQ(g.check(6400, t), frame_verdict::accept);
  EXPECT_EQ(g.check(2, t), frame_verdict::rate_limited);
  t += ms(50);
  EXPECT_EQ(g.check(6400, t), frame_verdict::rate_limited);  // only 3 200 available: the frame is dropped whole
  EXPECT_EQ(g.check(3200, t), frame_verdict::accept);
}

TEST(AudioGuard, TwiceRealTimeIsSustainedForAMinute) {
  auto t = audio_guard::clock::now();
  audio_guard g(t);
  for (int i = 0; i < 6000; ++i) {  // 20 ms frames (640 B) every 10 ms = 2x real time
    ASSERT_EQ(g.check(640, t), frame_verdict::accept) << i;
    t += ms(10);
  }
}

TEST(AudioGuard, ThreeTimesRealTimeIsCutToTwice) {
  auto t = audio_guard::clock::now();
  audio_guard g(t);
  std::size_t accepted = 0;
  const int seconds = 60;
  for (int i = 0; i < seconds * 150; ++i) {  // 640 B every 6.67 ms = 96 000 B/s
    if (g.check(640, t) == frame_verdict::accept) accepted += 640;
    t += std::chrono::microseconds(6667);
  }
  // burst + 2x real time over the period
  const double expected = audio_guard::capacity + audio_guard::refill_per_second * seconds;
  EXPECT_NEAR(static_cast<double>(accepted), expected, 2000);
}

TEST(AudioGuard, BucketNeverExceedsCapacity) {
  auto t = audio_guard::clock::now();
  audio_guard g(t);
  t += std::chrono::hours(1);
  g.check(2, t);
  EXPECT_LE(g.tokens(), audio_guard::capacity);
}

TEST(TextGuard, FortyAtOnceThenTwentyASecond) {
  auto t = text_guard::clock::now();
  text_guard g(t);
  for (int i = 0; i < 40; ++i) ASSERT_EQ(g.check(t), text_verdict::accept) << i;
  EXPECT_EQ(g.check(t), text_verdict::dropped);
  t += ms(1000);
  for (int i = 0; i < 20; ++i) ASSERT_EQ(g.check(t), text_verdict::accept) << i;
  EXPECT_EQ(g.check(t), text_verdict::dropped);
  for (int i = 0; i < 600; ++i) {  // 20 a second, sustained for half a minute
    t += ms(50);
    ASSERT_EQ(g.check(t), text_verdict::accept) << i;
  }
}

TEST(TextGuard, TwoHundredDropsWithinASecondAreAFlood) {
  auto t = text_guard::clock::now();
  text_guard g(t);
  for (int i = 0; i < 40; ++i) g.check(t);
  for (int i = 1; i < 200; ++i) ASSERT_EQ(g.check(t), text_verdict::dropped) << i;
  EXPECT_EQ(g.check(t), text_verdict::flood);
}

TEST(TextGuard, DropsSpreadOverSecondsAreNoFlood) {
  auto t = text_guard::clock::now();
  text_guard g(t);
  for (int i = 0; i < 40; ++i) g.check(t);
  for (int second = 0; second < 5; ++second) {
    for (int i = 0; i < 150; ++i) {
      ASSERT_NE(g.check(t), text_verdict::flood) << second << " " << i;
      t += ms(1000 / 150);
    }
    t += ms(10);
  }
}

TEST(AudioGuard, FourSecondsOfFramesAtOnceThenTwoHundredFiftyASecondWhateverTheirSize) {
  auto t = audio_guard::clock::now();
  audio_guard g(t);
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(g.check(2, t), frame_verdict::accept) << i;
  EXPECT_EQ(g.check(2, t), frame_verdict::too_many_frames);
  EXPECT_EQ(g.tokens(), audio_guard::capacity - 2000) << "a frame dropped for its number costs no bytes";
  for (int i = 0; i < 2500; ++i) {  // 4 ms frames, sustained for ten seconds
    t += ms(4);
    ASSERT_EQ(g.check(2, t), frame_verdict::accept) << i;
  }
}

TEST(AudioGuard, TheFrameRateIsConfigured) {
  auto t = audio_guard::clock::now();
  audio_guard g(t, 1000);
  for (int i = 0; i < 4000; ++i) ASSERT_EQ(g.check(2, t), frame_verdict::accept) << i;
  EXPECT_EQ(g.check(2, t), frame_verdict::too_many_frames);
  t += ms(1);
  EXPECT_EQ(g.check(2, t), frame_verdict::accept);
}

TEST(AudioGuard, FourSecondsOfFramesDroppedForTheirNumberWithinASecondAreAFlood) {
  auto t = audio_guard::clock::now();
  audio_guard g(t);
  for (int i = 0; i < 1000; ++i) g.check(2, t);
  for (int i = 1; i < 1000; ++i) ASSERT_EQ(g.check(2, t), frame_verdict::too_many_frames) << i;
  EXPECT_EQ(g.check(2, t), frame_verdict::flood);
}

// The second is counted from the first drop, not from the connect: a flood that begins late in a second is not cut
// in two.
TEST(AudioGuard, AFloodThatBeginsLateInASecondIsStillAFlood) {
  auto t = audio_guard::clock::now();
  const auto start = t;
  audio_guard g(t);
  for (int i = 0; i < 1000; ++i) g.check(2, t);  // the burst
  t += ms(900);
  bool flooded = false;
  for (; t < start + ms(1100) && !flooded; t += std::chrono::microseconds(150))
    flooded = g.check(2, t) == frame_verdict::flood;
  EXPECT_TRUE(flooded) << "from 0.9 s to 1.1 s after the connect: 1 333 frames, 270 of them within the rate";
}

}  // namespace
