// The active-speaker timeline of a room (actors/speaker_timeline): each report holds until the next one, and a span
// goes to whoever holds most of it; bounded in entries and age.
#include <gtest/gtest.h>

#include "actors/speaker_timeline.hpp"

namespace {

sw::active_speaker_update at(const char* who, std::int64_t ms) {
  return sw::active_speaker_update{who, std::string(who) + "!", ms};
}

TEST(SpeakerTimeline, AnUtteranceAcrossABoundaryGoesToTheLargerOverlap) {
  sw::speaker_timeline t;
  t.add(at("alice", 1'000));
  t.add(at("bob", 2'000));
  EXPECT_EQ(t.attribute(1'500, 2'600)->identity, "bob") << "500 ms alice, 600 ms bob";
  EXPECT_EQ(t.attribute(1'400, 2'300)->identity, "alice") << "600 ms alice, 300 ms bob";
  EXPECT_EQ(t.attribute(1'200, 1'800)->name, "alice!");
  EXPECT_EQ(t.attribute(5'000, 6'000)->identity, "bob") << "the last report holds";
  EXPECT_EQ(t.attribute(500, 1'100)->identity, "alice") << "the time before any report belongs to nobody";
  EXPECT_FALSE(t.attribute(0, 900)) << "nobody reported speaking then";
  EXPECT_EQ(t.attribute(2'500, 2'500)->identity, "bob") << "an empty span: who held that moment";
}

TEST(SpeakerTimeline, ReportsOutOfOrderAndRepeatsAddUp) {
  sw::speaker_timeline t;
  t.add(at("bob", 2'000));
  t.add(at("alice", 1'000));  // arrives late
  t.add(at("alice", 3'000));
  t.add(at("bob", 3'200));
  // [1000,4000]: alice 1000-2000 and 3000-3200 (1200 ms), bob 2000-3000 and 3200-4000 (1800 ms)
  EXPECT_EQ(t.attribute(1'000, 4'000)->identity, "bob");
  EXPECT_EQ(t.attribute(1'000, 3'150)->identity, "alice") << "alice 1150, bob 1000";
}

TEST(SpeakerTimeline, IsBoundedInEntriesAndAge) {
  sw::speaker_timeline t(4, 10'000);
  for (int i = 0; i < 10; ++i) t.add(at(i % 2 ? "bob" : "alice", i * 100));
  EXPECT_EQ(t.size(), 4u);
  EXPECT_EQ(t.latest()->identity, "bob");
  sw::speaker_timeline aged(100, 1'000);
  aged.add(at("alice", 0));
  aged.add(at("bob", 500));
  aged.add(at("carol", 5'000));
  EXPECT_EQ(aged.size(), 2u) << "alice is older than the window; bob still says who spoke at its start";
  EXPECT_EQ(aged.attribute(4'000, 4'500)->identity, "bob");
}

}  // namespace
