// LiveKit's wire formats (proto/livekit): the access token of a backend's Twirp calls, and the lenient readers of
// LiveKit's answers in both spellings (snake_case with int64 strings and enum names as LiveKit writes them;
// camelCase with numbers as other writers do).
#include <ctime>

#include <gtest/gtest.h>
#include <jwt/jwt.hpp>

#include "proto/livekit.hpp"

namespace {

TEST(LiveKit, AccessTokenCarriesKeyLifetimeAndGrant) {
  auto token = sw::livekit_access_token("APIkey", "s3cret", {false, true, "room-1"}, 1'800'000'000, 600);
  std::error_code ec;
  auto obj = jwt::decode(token, jwt::params::algorithms({"HS256"}), ec, jwt::params::secret("s3cret"),
                         jwt::params::verify(false));
  ASSERT_FALSE(ec) << ec.message();
  auto& p = obj.payload().create_json_obj();
  EXPECT_EQ(p["iss"], "APIkey");
  EXPECT_EQ(p["nbf"], 1'800'000'000);
  EXPECT_EQ(p["exp"], 1'800'000'600);
  EXPECT_EQ(p["video"]["roomAdmin"], true);
  EXPECT_EQ(p["video"]["room"], "room-1");
  EXPECT_FALSE(p["video"].contains("roomRecord"));
  auto egress = sw::livekit_access_token("APIkey", "s3cret", {true, false, ""}, 1'800'000'000);
  auto e = jwt::decode(egress, jwt::params::algorithms({"HS256"}), ec, jwt::params::secret("s3cret"),
                       jwt::params::verify(false));
  EXPECT_EQ(e.payload().create_json_obj()["video"], nlohmann::json({{"roomRecord", true}}));
  // signed with the API secret: it verifies with it, and with nothing else
  const auto now = static_cast<std::int64_t>(std::time(nullptr));
  auto fresh = sw::livekit_access_token("APIkey", "s3cret", {true, false, ""}, now);
  jwt::decode(fresh, jwt::params::algorithms({"HS256"}), ec, jwt::params::secret("s3cret"), jwt::params::verify(true));
  EXPECT_FALSE(ec) << ec.message();
  jwt::decode(fresh, jwt::params::algorithms({"HS256"}), ec, jwt::params::secret("other"), jwt::params::verify(true));
  EXPECT_TRUE(ec);
}

TEST(LiveKit, ParticipantsInEitherSpelling) {
  auto snake = sw::parse_livekit_participants(R"({"participants":[
    {"sid":"PA_1","identity":"alice","name":"Alice","kind":"STANDARD","joined_at":"1700000000",
     "tracks":[{"sid":"TR_a","type":"AUDIO","muted":false,"source":"MICROPHONE"},{"sid":"TR_v","type":"VIDEO"}]},
    {"sid":"PA_2","identity":"EG_x","kind":"EGRESS","tracks":[]}]})");
  ASSERT_TRUE(snake);
  ASSERT_EQ(snake->size(), 2u);
  EXPECT_EQ((*snake)[0].identity, "alice");
  EXPECT_EQ((*snake)[0].name, "Alice");
  EXPECT_FALSE((*snake)[0].egress);
  ASSERT_EQ((*snake)[0].tracks.size(), 2u);
  EXPECT_TRUE((*snake)[0].tracks[0].audio);
  EXPECT_FALSE((*snake)[0].tracks[1].audio);
  EXPECT_TRUE((*snake)[1].egress);
  // camelCase, enums as numbers, the default enum (AUDIO, STANDARD) left out
  auto camel = sw::parse_livekit_participants(
      R"({"participants":[{"identity":"bob","joinedAt":1700000000,"tracks":[{"sid":"TR_b","muted":true},{"sid":"TR_c","type":1}]},{"identity":"eg","kind":2}]})");
  ASSERT_TRUE(camel);
  ASSERT_EQ(camel->size(), 2u);
  EXPECT_TRUE((*camel)[0].tracks[0].audio);
  EXPECT_TRUE((*camel)[0].tracks[0].muted);
  EXPECT_FALSE((*camel)[0].tracks[1].audio);
  EXPECT_TRUE((*camel)[1].egress);
  EXPECT_EQ(sw::parse_livekit_participants("{}")->size(), 0u) << "an empty room: the list left out";
  EXPECT_FALSE(sw::parse_livekit_participants(R"({"participants":{}})"));
  EXPECT_FALSE(sw::parse_livekit_participants("not json"));
}

TEST(LiveKit, EgressInfoAndListInEitherSpelling) {
  auto e = sw::parse_livekit_egress(
      R"({"egress_id":"EG_1","room_name":"room-1","status":"EGRESS_ACTIVE","started_at":"1700000000000000000",
          "track":{"room_name":"room-1","track_id":"TR_a","websocket_url":"wss://x/egress/audio?token=t"}})");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->egress_id, "EG_1");
  EXPECT_EQ(e->track_id, "TR_a");
  EXPECT_TRUE(e->active());
  auto camel = sw::parse_livekit_egress(R"({"egressId":"EG_2","roomName":"r","status":4,"error":"pipeline failed"})");
  ASSERT_TRUE(camel);
  EXPECT_EQ(camel->status, "EGRESS_FAILED");
  EXPECT_FALSE(camel->active());
  EXPECT_EQ(camel->error, "pipeline failed");
  EXPECT_EQ(sw::parse_livekit_egress(R"({"egressId":"EG_3"})")->status, "EGRESS_STARTING") << "the default status";
  EXPECT_FALSE(sw::parse_livekit_egress(R"({"room_name":"r"})")) << "no egress without an id";
  auto list = sw::parse_livekit_egress_list(
      R"({"items":[{"egress_id":"EG_1","status":"EGRESS_COMPLETE"},{"egressId":"EG_2","status":1}],"next_page_token":""})");
  ASSERT_TRUE(list);
  ASSERT_EQ(list->size(), 2u);
  EXPECT_FALSE((*list)[0].active());
  EXPECT_TRUE((*list)[1].active());
  EXPECT_EQ(sw::parse_livekit_egress_list("{}")->size(), 0u);
}

TEST(LiveKit, TwirpErrorsBecomeMessages) {
  EXPECT_EQ(sw::livekit_error_message(
                412, R"({"code":"failed_precondition","msg":"egress with status EGRESS_COMPLETE cannot be stopped"})"),
            "LiveKit failed_precondition: egress with status EGRESS_COMPLETE cannot be stopped (HTTP 412)");
  EXPECT_EQ(sw::livekit_error_message(401, R"({"code":"unauthenticated","msg":"permissions denied","meta":{}})"),
            "LiveKit unauthenticated: permissions denied (HTTP 401)");
  EXPECT_EQ(sw::livekit_error_message(502, "<html>bad gateway</html>"), "LiveKit answered HTTP 502");
  // A message of any length is quoted in part: it goes to a log line and to the room.
  const auto long_one = sw::livekit_error_message(
      500, R"({"code":")" + std::string(1000, 'c') + R"(","msg":")" + std::string(100'000, 'm') + R"("})");
  EXPECT_EQ(long_one, "LiveKit " + std::string(64, 'c') + "…: " + std::string(300, 'm') + "… (HTTP 500)");
}

// §A2.6: the raw JWT (no Bearer), HS256 with the API secret, iss = the API key, sha256 = base64 of SHA-256 of the
// exact body; anything else is refused before the body is read.
TEST(LiveKit, WebhookSignatureCoversKeySecretAndTheExactBody) {
  const std::string body = R"({"event":"track_published","room":{"name":"r"}})";
  const auto now = static_cast<std::int64_t>(std::time(nullptr));
  auto token = sw::livekit_webhook_token("APIkey", "s3cret", body, now);
  EXPECT_EQ(sw::verify_livekit_webhook(token, body, "APIkey", "s3cret"), "");
  EXPECT_NE(sw::verify_livekit_webhook(token, body + " ", "APIkey", "s3cret"), "") << "one byte more";
  EXPECT_EQ(sw::verify_livekit_webhook(token, R"({"event":"track_published","room":{"name":"s"}})", "APIkey", "s3cret"),
            "body does not match the token's sha256 claim");
  EXPECT_EQ(sw::verify_livekit_webhook(token, body, "otherKey", "s3cret"),
            "token issuer is not this service's LiveKit API key");
  EXPECT_EQ(sw::verify_livekit_webhook(token, body, "APIkey", "other"), "token signature is invalid");
  EXPECT_NE(sw::verify_livekit_webhook("Bearer " + token, body, "APIkey", "s3cret"), "") << "raw JWT only";
  EXPECT_EQ(sw::verify_livekit_webhook("", body, "APIkey", "s3cret"), "missing Authorization header");
  EXPECT_EQ(sw::verify_livekit_webhook(sw::livekit_webhook_token("APIkey", "s3cret", body, now - 3600), body, "APIkey",
                                       "s3cret"),
            "token expired");
  // A token without the sha256 claim (an access token) signs nothing.
  auto access = sw::livekit_access_token("APIkey", "s3cret", {true, false, ""}, now);
  EXPECT_EQ(sw::verify_livekit_webhook(access, body, "APIkey", "s3cret"),
            "body does not match the token's sha256 claim");
}

TEST(LiveKit, WebhookEventsReadInBothSpellings) {
  auto w = sw::parse_livekit_webhook(
      R"({"event":"track_published","room":{"sid":"RM_1","name":"r"},"participant":{"identity":"alice","name":"Alice"},)"
      R"("track":{"sid":"TR_a","source":"MICROPHONE"},"id":"EV_1","createdAt":"1764000000"})");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->event, "track_published");
  EXPECT_EQ(w->room, "r");
  EXPECT_EQ(w->participant_identity, "alice");
  EXPECT_EQ(w->track_sid, "TR_a");
  EXPECT_TRUE(w->track_audio) << "AUDIO is the enum's zero: protojson leaves it out";
  auto video = sw::parse_livekit_webhook(
      R"({"event":"track_published","room":{"name":"r"},"track":{"sid":"TR_v","type":"VIDEO"}})");
  EXPECT_FALSE(video->track_audio);
  auto ended = sw::parse_livekit_webhook(
      R"({"event":"egress_ended","egress_info":{"egress_id":"EG_1","room_name":"r","status":"EGRESS_COMPLETE"}})");
  ASSERT_TRUE(ended && ended->egress);
  EXPECT_EQ(ended->egress->egress_id, "EG_1");
  EXPECT_EQ(ended->room, "r") << "the room of an egress event comes from its EgressInfo";
  EXPECT_FALSE(sw::parse_livekit_webhook(R"({"room":{"name":"r"}})")) << "no event";
  EXPECT_FALSE(sw::parse_livekit_webhook("[1]"));
}

TEST(LiveKit, RequestBodiesUseTheProtoNames) {
  EXPECT_EQ(sw::livekit_list_participants_body("r\"1"), R"({"room":"r\"1"})");
  EXPECT_EQ(sw::livekit_track_egress_body("r", "TR_a", "wss://x/egress/audio?token=t"),
            R"({"room_name":"r","track_id":"TR_a","websocket_url":"wss://x/egress/audio?token=t"})");
  EXPECT_EQ(
      sw::livekit_room_audio_egress_body("r", "wss://x/e"),
      R"({"room_name":"r","media":{"audio":{"capture_all":true}},"outputs":[{"stream":{"protocol":"WEBSOCKET","urls":["wss://x/e"]}}]})");
  EXPECT_EQ(sw::livekit_stop_egress_body("EG_1"), R"({"egress_id":"EG_1"})");
  EXPECT_EQ(sw::livekit_list_egress_body("r", true), R"({"room_name":"r","active":true})");
  auto e = sw::parse_livekit_egress(
      R"({"egress_id":"EG_9","status":"EGRESS_ACTIVE","stream_results":[{"url":"wss://x/egress/audio?token=t"}]})");
  EXPECT_EQ(e->websocket_url, "wss://x/egress/audio?token=t") << "a room mix names its URL in stream_results";
}

}  // namespace
