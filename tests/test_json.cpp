#include <gtest/gtest.h>

#include "actors/json.hpp"
#include "tests/support/harness.hpp"

namespace {

using sw::test::field;

TEST(Json, TranscriptModernAndLegacyShapes) {
  sw::room_transcript t{"room", "k-u1", "hello \"world\"", true, "alice", "Alice", "en", 1.5, 2.25};
  auto modern = sw::json_transcript(t, 1234, false);
  EXPECT_EQ(field(modern, "type"), "transcript_final");
  EXPECT_EQ(field(modern, "text"), "hello \"world\"");
  EXPECT_EQ(field(modern, "utteranceId"), "k-u1");
  EXPECT_EQ(field(modern, "speaker"), "alice");
  EXPECT_EQ(field(modern, "speakerName"), "Alice");
  EXPECT_EQ(field(modern, "isFinal"), "true");
  EXPECT_EQ(field(modern, "start"), "1.5");
  EXPECT_EQ(field(modern, "ts"), "1234");
  auto legacy = sw::json_transcript(t, 1234, true);
  EXPECT_EQ(field(legacy, "type"), "transcription");
  EXPECT_EQ(field(legacy, "is_final"), "true");
  EXPECT_EQ(field(legacy, "utterance_id"), "k-u1");
  t.is_final = false;
  EXPECT_EQ(field(sw::json_transcript(t, 1, false), "type"), "transcript_partial");
}

TEST(Json, ClientMessages) {
  auto m = sw::parse_client_message(R"({"type":"active_speaker","identity":"bob","timestamp":17})");
  EXPECT_TRUE(m.valid_json);
  EXPECT_EQ(m.type, "active_speaker");
  EXPECT_EQ(m.identity, "bob");
  EXPECT_EQ(m.timestamp, 17);
  EXPECT_FALSE(sw::parse_client_message("{").valid_json);
  EXPECT_FALSE(sw::parse_client_message("[1]").valid_json);
  EXPECT_FALSE(sw::parse_client_message("\"\xff\"").valid_json);
  EXPECT_EQ(sw::parse_client_message(R"({"type":5})").type, "");
}

}  // namespace
