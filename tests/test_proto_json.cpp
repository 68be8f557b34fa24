#include <gtest/gtest.h>

#include "proto/gladia_message.hpp"
#include "proto/journal_line.hpp"
#include "proto/json.hpp"
#include "proto/rapidjson.hpp"
#include "tests/support/harness.hpp"

namespace {

using sw::test::field;

TEST(Json, EverythingWrittenIsValidUtf8) {
  EXPECT_EQ(sw::valid_utf8("plain"), "plain");
  EXPECT_EQ(sw::valid_utf8("caf\xC3\xA9 \xF0\x9F\x8E\xA4"), "caf\xC3\xA9 \xF0\x9F\x8E\xA4");
  const std::string bad = "\xEF\xBF\xBD";
  EXPECT_EQ(sw::valid_utf8("a\xFF"
                           "b"),
            "a" + bad + "b");
  EXPECT_EQ(sw::valid_utf8("\xED\xB0\x80"), bad + bad + bad) << "a surrogate is not UTF-8";
  EXPECT_EQ(sw::valid_utf8("\xC0\xAF"), bad + bad) << "an overlong form is not UTF-8";
  EXPECT_EQ(sw::valid_utf8("\xF4\x90\x80\x80"), bad + bad + bad + bad) << "past U+10FFFF";
  EXPECT_EQ(sw::valid_utf8("\xE2\x82"), bad + bad) << "cut short";
  auto body = sw::json_builder().str("path", "/\xFF\xFE").done();
  EXPECT_EQ(body, "{\"path\":\"/" + bad + bad + "\"}");
}

// Found by fuzzing: numbers no int64 (or count) holds were cast anyway, which is undefined.
TEST(Json, NumbersOutOfRangeReadAsZero) {
  EXPECT_EQ(sw::parse_client_message(R"({"type":"active_speaker","timestamp":1e54})").timestamp, 0);
  EXPECT_EQ(sw::parse_client_message(R"({"type":"active_speaker","timestamp":-1e30})").timestamp, 0);
  EXPECT_EQ(sw::parse_client_message(R"({"type":"active_speaker","timestamp":1790000000000})").timestamp,
            1790000000000);
  sw::usage_record u;
  ASSERT_TRUE(sw::decode_journal_record(R"({"slug":"r","chunks":1e300,"tr":-4,"fin":2.5,"par":7})", u));
  EXPECT_EQ(u.audio_chunks, 0u);
  EXPECT_EQ(u.transcripts, 0u);
  EXPECT_EQ(u.finals, 0u);
  EXPECT_EQ(u.partials, 7u);
}

TEST(Json, NestingIsBoundedWithoutRecursion) {
  rapidjson::Document d;
  const std::string deepest =
      std::string(sw::max_json_depth - 1, '[') + R"({"a":1})" + std::string(sw::max_json_depth - 1, ']');
  for (bool by_length : {false, true}) {  // a string read up to its NUL, and bytes read by their length
    auto parse = [&](const std::string& s) {
      return by_length ? sw::parse_json(d, std::string_view(s)) : sw::parse_json(d, s);
    };
    EXPECT_FALSE(parse(std::string(200'000, '[')));
    EXPECT_TRUE(parse(deepest)) << by_length;
    EXPECT_EQ(d.GetArray()[0].GetArray().Size(), 1u);
    EXPECT_FALSE(parse("[" + deepest + "]")) << by_length;
    EXPECT_TRUE(d.IsNull()) << "a refused text leaves no value behind";
    EXPECT_TRUE(parse(R"({"text":")" + std::string(500, '[') + R"( \" {{{"})")) << "brackets in strings do not count";
    EXPECT_FALSE(parse(R"({"a":[1,2]] })"));
    // A NUL byte ends the text for either reading: after the value it is the end, within it an error.
    EXPECT_TRUE(parse(std::string(R"({"a":1})"
                                  "\0"
                                  "trailing",
                                  16)));
    EXPECT_FALSE(parse(std::string(R"({"a":"x)"
                                   "\0"
                                   R"(y"})",
                                   11)));
    // A byte order mark at the start, or a byte of one, is skipped either way (the fuzz target found the difference).
    EXPECT_TRUE(
        parse("\xEF\xBB\xBF"
              R"({"a":1})"));
    EXPECT_TRUE(
        parse("\xBB"
              R"({"type":"audio_chunk"})"));
  }
  EXPECT_FALSE(sw::parse_client_message("[" + std::string(100'000, '{')).valid_json);
  EXPECT_FALSE(sw::parse_json_object(R"({"a":)" + std::string(500, '[')).ok);
  // a journal line cannot take the replay down either
  sw::final_record f;
  EXPECT_FALSE(sw::decode_journal_record(std::string(200'000, '['), f));
}

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

// Gladia's messages are parsed in a scratch document: an ack and a transcript of a long utterance fit in its own
// room (no heap block a message), a message larger than that still parses whole, on the heap.
TEST(Json, AScratchDocumentTakesGladiasMessagesWithoutTheHeap) {
  const std::string ack =
      R"({"session_id":"4a39145c-2844-4557-8f34-34883f7be7d9","created_at":"2026-12-03T10:00:00.000Z",)"
      R"("type":"audio_chunk","acknowledged":true,"error":null,)"
      R"("data":{"byte_range":[3104000,3107200],"time_range":[97.0,97.1]}})";
  std::string words;
  for (int i = 0; i < 40; ++i)
    words += std::string(i ? "," : "") + R"({"word":" word)" + std::to_string(i) + R"(","start":)" + std::to_string(i) +
             R"(.25,"end":)" + std::to_string(i) + R"(.5,"confidence":0.93})";
  const std::string transcript =
      R"({"session_id":"4a39145c-2844-4557-8f34-34883f7be7d9","created_at":"2026-12-03T10:00:00.000Z",)"
      R"("type":"transcript","data":{"id":"00_00000012","is_final":true,"utterance":{"text":"forty words)"
      R"( of a long utterance","start":0.25,"end":39.5,"confidence":0.93,"channel":0,"language":"en","words":[)" +
      words + "]}}}";
  for (const auto* text : {&ack, &transcript}) {
    sw::scratch_document doc;
    ASSERT_TRUE(sw::parse_json(*doc, *text));
    EXPECT_TRUE(doc->IsObject());
    EXPECT_FALSE(doc.spilled()) << text->size() << " bytes of JSON needed the heap";
  }
  sw::scratch_document doc;
  ASSERT_TRUE(sw::parse_json(*doc, transcript));
  EXPECT_EQ((*doc)["data"]["utterance"]["words"].Size(), 40u);
  EXPECT_EQ(std::string((*doc)["data"]["utterance"]["words"][39]["word"].GetString()), " word39");

  std::string big = R"({"type":"transcript","data":{"id":"x","is_final":false,"utterance":{"text":")" +
                    std::string(20'000, 'a') + R"(","words":[)";
  for (int i = 0; i < 500; ++i) big += std::string(i ? "," : "") + R"({"word":"w","start":1.5,"end":2})";
  big += "]}}}";
  sw::scratch_document large;
  ASSERT_TRUE(sw::parse_json(*large, big));
  EXPECT_TRUE(large.spilled());
  EXPECT_EQ(std::string((*large)["data"]["utterance"]["text"].GetString()).size(), 20'000u);
  EXPECT_EQ((*large)["data"]["utterance"]["words"].Size(), 500u);
  sw::scratch_document deep;
  EXPECT_FALSE(sw::parse_json(*deep, std::string(200'000, '['))) << "the depth bound holds for it too";
}

// A peer's text is quoted in part, never cut inside a character.
TEST(Json, AnExcerptIsCutAtACharacterBoundary) {
  EXPECT_EQ(sw::excerpt("short", 300), "short");
  EXPECT_EQ(sw::excerpt(std::string(301, 'a'), 300), std::string(300, 'a') + "…");
  EXPECT_EQ(sw::excerpt("ab\xc3\xa9", 3), "ab…");                  // é would be cut in two
  EXPECT_EQ(sw::excerpt("ab\xe2\x82\xac\xe2\x82\xac", 4), "ab…");  // so would €
  EXPECT_EQ(sw::excerpt("ab\xe2\x82\xac\xe2\x82\xac", 5), "ab\xe2\x82\xac…");
  EXPECT_EQ(sw::excerpt("abc", 0), "…");
}

}  // namespace

// Gladia's list of a session's utterances, from post_transcript and from GET /v2/live/{id}: finals with their times;
// anything else in the list is skipped, and a result without a status is no result.
TEST(Json, GladiasUtteranceListsReadAsFinals) {
  auto m = sw::parse_gladia_message(std::string(
      R"({"type":"post_transcript","data":{"utterances":[{"start":1.5,"end":2.25,"text":"hi","language":"en"},7,)"
      R"({"start":"x","end":3,"text":"there"}]}})"));
  EXPECT_EQ(m.what, sw::gladia_message::kind::post_transcript);
  ASSERT_EQ(m.utterances.size(), 2u);
  EXPECT_TRUE(m.utterances[0].is_final);
  EXPECT_EQ(m.utterances[0].text, "hi");
  EXPECT_EQ(m.utterances[0].start, 1.5);
  EXPECT_EQ(m.utterances[0].end, 2.25);
  EXPECT_EQ(m.utterances[1].start, 0) << "a time that is not a number reads as 0";
  EXPECT_EQ(m.utterances[1].end, 3);
  auto done = sw::parse_gladia_result(
      R"({"id":"s","status":"done","result":{"transcription":{"utterances":[{"start":0,"end":1,"text":"a"}]}}})");
  EXPECT_EQ(done.status, "done");
  ASSERT_EQ(done.utterances.size(), 1u);
  EXPECT_EQ(done.utterances[0].text, "a");
  EXPECT_EQ(sw::parse_gladia_result(R"({"status":"processing","result":null})").status, "processing");
  EXPECT_TRUE(
      sw::parse_gladia_result(R"({"result":{"transcription":{"utterances":[{"text":"a"}]}}})").utterances.empty());
  EXPECT_TRUE(sw::parse_gladia_result("not json").status.empty());
}

// stop_recording's acknowledgment: accepted, or refused (as Gladia does for a recording already stopped).
TEST(Json, GladiasStopAcknowledgmentSaysWhetherItWasTaken) {
  auto taken = sw::parse_gladia_message(std::string(
      R"({"type":"stop_recording","session_id":"s","acknowledged":true,"error":null,"data":{"recording_duration":1.5}})"));
  EXPECT_EQ(taken.what, sw::gladia_message::kind::stop_ack);
  EXPECT_TRUE(taken.acknowledged);
  auto refused = sw::parse_gladia_message(std::string(
      R"({"type":"stop_recording","acknowledged":false,"error":{"status_code":409,"message":"Recording already stopped"}})"));
  EXPECT_EQ(refused.what, sw::gladia_message::kind::stop_ack);
  EXPECT_FALSE(refused.acknowledged);
  EXPECT_FALSE(sw::parse_gladia_message(std::string(R"({"type":"stop_recording","acknowledged":"yes"})")).acknowledged);
}
