// Room fan-out: every transcript of every stream of a room reaches every client of that room, and only
// that room; finals are delivered once; many concurrent clients.
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "tests/support/harness.hpp"

namespace {

using sw::net::ws_client;
using sw::test::expect_message;
using sw::test::field;
using sw::test::harness;
using namespace std::chrono_literals;

void send_audio(ws_client& c, std::size_t bytes) {
  std::vector<std::uint8_t> f(bytes, 1);
  c.send_binary(f.data(), f.size());
}

// Collects the finals that arrive within `quiet` of the previous message.
std::vector<std::string> finals(ws_client& c, std::chrono::milliseconds quiet = 300ms) {
  std::vector<std::string> out;
  for (;;) {
    auto m = c.read(quiet);
    if (m.kind != ws_client::message::text) return out;
    if (field(m.data, "type") == "transcript_final") out.push_back(m.data);
  }
}

TEST(Fanout, TwoClientsOfARoomGetEachOthersTranscriptsAndOtherRoomsNothing) {
  harness h;
  auto alice = h.connect("room-a", "alice");
  auto bob = h.connect("room-a", "bob");
  auto carol = h.connect("room-b", "carol");
  for (auto* c : {alice.get(), bob.get(), carol.get()}) expect_message(*c, "ready");
  send_audio(*alice, 640);
  auto at_bob = expect_message(*bob, "transcript_final");
  EXPECT_EQ(field(at_bob, "speaker"), "alice");
  auto at_alice = expect_message(*alice, "transcript_final");
  EXPECT_EQ(at_alice.substr(0, at_alice.find("\"ts\"")), at_bob.substr(0, at_bob.find("\"ts\"")));
  send_audio(*bob, 320);
  auto from_bob = expect_message(*alice, "transcript_final");
  EXPECT_EQ(field(from_bob, "speaker"), "bob");
  EXPECT_EQ(field(from_bob, "text"), "chunk 1 320B");
  // both streams' first utterance is "u1" upstream; the room sees distinct ids
  EXPECT_NE(field(from_bob, "utteranceId"), field(at_bob, "utteranceId"));
  EXPECT_EQ(field(expect_message(*bob, "transcript_final"), "speaker"), "bob");
  EXPECT_TRUE(finals(*carol).empty());
}

TEST(Fanout, FinalsAreDeliveredOncePerUtterance) {
  sw::test::echo_options o;
  o.duplicate_finals = true;
  harness h({}, sw::test::echo_provider(o));
  auto alice = h.connect("room", "alice");
  auto bob = h.connect("room", "bob");
  expect_message(*alice, "ready");
  expect_message(*bob, "ready");
  for (int i = 0; i < 5; ++i) send_audio(*alice, 640);
  auto got = finals(*bob);
  ASSERT_EQ(got.size(), 5u);
  std::set<std::string> ids;
  for (auto& f : got) ids.insert(field(f, "utteranceId"));
  EXPECT_EQ(ids.size(), 5u);
  auto m = sw::net::http_fetch(h.http("/metrics"));
  EXPECT_NE(field(m.body, "counters").find("\"ws.duplicate_final_transcripts_skipped\":5"), std::string::npos)
      << m.body;
}

TEST(Fanout, LegacyAndModernClientsShareARoom) {
  harness h;
  auto modern = h.connect("room", "alice");
  auto legacy = h.connect("room", "bob", "&format=legacy");
  expect_message(*modern, "ready");
  expect_message(*legacy, "ready");
  send_audio(*modern, 640);
  EXPECT_EQ(field(expect_message(*legacy, "\"is_final\":true"), "speakerId"), "alice");
  EXPECT_EQ(field(expect_message(*modern, "transcript_final"), "speakerId"), "alice");
}

TEST(Fanout, TwoHundredConcurrentClients) {
  harness h;
  constexpr int rooms = 10, per_room = 20;
  std::vector<std::unique_ptr<ws_client>> clients;
  for (int r = 0; r < rooms; ++r)
    for (int i = 0; i < per_room; ++i)
      clients.push_back(
          h.connect("load-" + std::to_string(r), "p" + std::to_string(i), "", "u" + std::to_string(r * per_room + i)));
  for (auto& c : clients) expect_message(*c, "ready", 10000);
  auto m = sw::net::http_fetch(h.http("/metrics"));
  EXPECT_EQ(field(m.body, "activeConnections"), "200");
  for (int r = 0; r < rooms; ++r)
    EXPECT_NE(field(m.body, "sessionClients").find("\"load-" + std::to_string(r) + "\":20"), std::string::npos);
  // the first client of each room speaks; every client of that room hears it
  for (int r = 0; r < rooms; ++r) send_audio(*clients[r * per_room], 640);
  for (int r = 0; r < rooms; ++r)
    for (int i = 0; i < per_room; ++i) {
      auto fin = expect_message(*clients[r * per_room + i], "transcript_final", 10000);
      EXPECT_EQ(field(fin, "sessionSlug"), "load-" + std::to_string(r));
      EXPECT_EQ(field(fin, "speaker"), "p0");
    }
  for (auto& c : clients) c->close();
}

}  // namespace
