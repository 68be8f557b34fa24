// Room transcription through LiveKit (issue 13), against the fake LiveKit of tests/fakes: the start/stop routes, one
// egress per published audio track, the egress streams dialled back to /egress/audio, signed webhooks,
// reconciliation, LiveKit's failures reaching the room, and attribution by active speaker of a room mix.
#include <algorithm>
#include <cmath>
#include <ctime>
#include <functional>
#include <future>
#include <iterator>
#include <map>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>

#include "apps/audio_file.hpp"
#include "proto/livekit.hpp"
#include "proto/time.hpp"
#include "proto/token.hpp"
#include "tests/fakes/fake_gladia.hpp"
#include "tests/fakes/fake_livekit.hpp"
#include "tests/support/harness.hpp"
#include "tests/support/librivox.hpp"
#include "tests/support/wer.hpp"

namespace {

using sw::net::http_fetch;
using sw::net::ws_client;
using sw::test::eventually;
using sw::test::expect_message;
using sw::test::fake_livekit;
using sw::test::field;
using sw::test::harness;
using namespace std::chrono_literals;

constexpr double pi = 3.14159265358979323846;

// A port free right now, for a service whose PUBLIC_BASE_URL has to name its port before it starts.
std::uint16_t free_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

// `seconds` of a `hz` tone as LiveKit sends it: S16LE, 48 kHz, stereo.
std::string stereo_tone(double seconds, double hz) {
  const std::size_t n = static_cast<std::size_t>(seconds * 48'000);
  std::string out;
  out.reserve(n * 4);
  for (std::size_t i = 0; i < n; ++i) {
    const auto s =
        static_cast<std::int16_t>(std::lrint(8'000 * std::sin(2 * pi * hz * static_cast<double>(i) / 48'000)));
    for (int ch = 0; ch < 2; ++ch) {
      out.push_back(static_cast<char>(static_cast<std::uint16_t>(s) & 0xff));
      out.push_back(static_cast<char>(static_cast<std::uint16_t>(s) >> 8));
    }
  }
  return out;
}

// The service configured for the fake LiveKit, on a port known in advance.
struct livekit_room {
  std::unique_ptr<fake_livekit> lk;
  std::unique_ptr<harness> h;
  livekit_room(fake_livekit::options o, const std::function<void(sw::config&)>& tweak = {},
               std::optional<sw::stt_provider> stt = sw::test::echo_provider(), bool stt_from_config = false) {
    lk = std::make_unique<fake_livekit>(o);
    const auto port = free_port();
    h = std::make_unique<harness>(
        [&](sw::config& c) {
          c.port = port;
          c.livekit.url = lk->url();
          c.livekit.api_key = lk->opts().api_key;
          c.livekit.api_secret = lk->opts().api_secret;
          c.livekit.public_base_url = "ws://127.0.0.1:" + std::to_string(port);
          c.livekit.timeout = 2000ms;
          if (tweak) tweak(c);
        },
        stt, stt_from_config);
    lk->set_webhook_url(h->http("/api/livekit/webhook"));
  }
  sw::net::http_result start(const std::string& slug, const std::string& session_id = "vs-1") const {
    return http_fetch(h->http("/api/transcription/start"), "POST",
                      R"({"sessionId":")" + session_id + R"(","sessionSlug":")" + slug + "\"}",
                      {{"Authorization", "Bearer " + h->cfg.service_api_secret}});
  }
  sw::net::http_result stop(const std::string& session_id = "vs-1") const {
    sw::net::client_options o;
    o.timeout = 60s;
    return http_fetch(h->http("/api/transcription/stop"), "POST", R"({"sessionId":")" + session_id + "\"}",
                      {{"Authorization", "Bearer " + h->cfg.service_api_secret}}, o);
  }
  // Egresses of `track` (any state).
  std::vector<fake_livekit::egress_record> of_track(const std::string& track) const {
    std::vector<fake_livekit::egress_record> out;
    for (auto& e : lk->egresses())
      if (e.track_id == track) out.push_back(e);
    return out;
  }
  bool streaming(const std::string& track) const {
    for (auto& e : of_track(track))
      if (e.upgrade_status == 101 && !e.closed && e.bytes_sent > 0) return true;
    return false;
  }
};

TEST(LiveKitRoom, StartStopAndWebhooksRefuseWhatIsNotSigned) {
  livekit_room r({});
  auto url = r.h->http("/api/transcription/start");
  for (const auto& auth : {std::string(), std::string("Bearer wrong"), "Basic " + r.h->cfg.service_api_secret}) {
    sw::header_list headers;
    if (!auth.empty()) headers.emplace_back("Authorization", auth);
    auto res = http_fetch(url, "POST", R"({"sessionId":"vs-1","sessionSlug":"r"})", headers);
    EXPECT_EQ(res.status, 401u) << auth;
    res = http_fetch(r.h->http("/api/transcription/stop"), "POST", R"({"sessionId":"vs-1"})", headers);
    EXPECT_EQ(res.status, 401u) << auth;
  }
  EXPECT_EQ(r.lk->calls("ListParticipants"), 0);
  auto stop = r.stop("never-started");
  EXPECT_EQ(stop.status, 200u);
  EXPECT_EQ(stop.body, R"({"success":true,"sessionId":"never-started"})") << "also when nothing ran";
}

// Two starts at the same moment (and a third later) make exactly one egress per published audio track: not for the
// room's egress participant, not for video. Every call carries the token and grants LiveKit asks for, and each
// egress dials /egress/audio with audio/x-raw and streams. Stop ends them all and answers once they drained.
TEST(LiveKitRoom, ConcurrentStartsMakeOneEgressPerAudioTrackAndStopEndsThem) {
  livekit_room r({});
  r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(1, 440));
  r.lk->publish("r", "bob", "Bob", "TR_B", stereo_tone(1, 660));
  r.lk->add_egress_participant("r");
  sw::net::http_result a, b;
  std::thread t1([&] { a = r.start("r"); }), t2([&] { b = r.start("r"); });
  t1.join();
  t2.join();
  EXPECT_EQ(a.status, 200u);
  EXPECT_EQ(a.body, R"({"ok":true,"mode":"live"})");
  EXPECT_EQ(b.status, 200u);
  ASSERT_TRUE(eventually([&] { return r.streaming("TR_A") && r.streaming("TR_B"); }, 10s));
  EXPECT_EQ(r.start("r").status, 200u);  // a start while running changes nothing
  ASSERT_TRUE(eventually([&] { return r.lk->calls("ListParticipants") >= 2; }));
  EXPECT_EQ(r.of_track("TR_A").size(), 1u);
  EXPECT_EQ(r.of_track("TR_B").size(), 1u);
  EXPECT_EQ(r.lk->egresses().size(), 2u) << "no egress for the egress participant's track";
  EXPECT_TRUE(r.lk->refusals().empty()) << r.lk->refusals().front();
  for (auto& e : r.lk->egresses()) {
    EXPECT_EQ(e.upgrade_status, 101u);
    EXPECT_EQ(e.websocket_url.rfind("ws://127.0.0.1:" + std::to_string(r.h->port) + "/egress/audio?token=", 0), 0u);
  }
  auto metrics = http_fetch(r.h->http("/metrics")).body;
  EXPECT_NE(metrics.find(R"("egress":{"r":{"mode":"track","state":"running","egresses":2)"), std::string::npos)
      << metrics;

  auto stopped = r.stop();
  EXPECT_EQ(stopped.status, 200u);
  EXPECT_EQ(stopped.body, R"({"success":true,"sessionId":"vs-1"})");
  EXPECT_EQ(r.lk->active_egresses(), 0u);
  // The service answers once its side of each stream has ended; the fake egress books its own end on its thread
  // (after its close handshake's teardown completes), which may come just after.
  EXPECT_TRUE(eventually([&] {
    for (auto& e : r.lk->egresses())
      if (e.status != "EGRESS_COMPLETE") return false;
    return true;
  }));
  for (auto& e : r.lk->egresses()) {
    EXPECT_EQ(e.status, "EGRESS_COMPLETE") << e.egress_id;
    EXPECT_TRUE(e.close_code == 1000 || e.close_code == 1005) << e.close_code << ": the close handshake completed";
  }
  EXPECT_EQ(field(http_fetch(r.h->http("/metrics")).body, "activeSttRelays"), "0") << "both streams drained";
  EXPECT_EQ(http_fetch(r.h->http("/metrics")).body.find(R"("egress":{"r")"), std::string::npos);
}

// The finals a viewer of the room gets until `until` holds or `limit` passes, by speaker.
std::map<std::string, int> finals_by_speaker(ws_client& viewer,
                                             const std::function<bool(const std::map<std::string, int>&)>& until,
                                             std::chrono::milliseconds limit) {
  std::map<std::string, int> got;
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!until(got) && std::chrono::steady_clock::now() < end) {
    auto m = viewer.read(std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()));
    if (m.kind != ws_client::message::text) break;
    if (field(m.data, "type") == "transcript_final") ++got[field(m.data, "speakerId")];
  }
  return got;
}

// LiveKit does not carry out the stop: StopEgress is never answered and the egresses go on streaming. After its grace
// (5 s) the service ends the streams itself; they drain, their finals reach the room and the database, and the stop
// answers without reaching its bound.
TEST(LiveKitRoom, StreamsLiveKitDoesNotEndAfterTheStopAreEndedFromThisSide) {
  sw::test::echo_options eo;
  eo.drain = 300ms;  // the last finals come a little after the stop
  eo.final_delay = 200ms;
  livekit_room r(
      {}, [](sw::config& c) { c.livekit.timeout = 1000ms; }, sw::test::echo_provider(eo));
  auto lines = sw::test::capture_log(*r.h);
  r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(1, 440));
  r.lk->publish("r", "bob", "Bob", "TR_B", stereo_tone(1, 660));
  auto viewer = r.h->connect("r", "carol");
  expect_message(*viewer, "ready");
  ASSERT_EQ(r.start("r").status, 200u);
  ASSERT_TRUE(eventually([&] { return r.streaming("TR_A") && r.streaming("TR_B"); }, 10s));
  auto both = [](const std::map<std::string, int>& got) { return got.count("alice") && got.count("bob"); };
  ASSERT_TRUE(both(finals_by_speaker(*viewer, both, 10s))) << "both streams reach the room";

  r.lk->stall("StopEgress", true);
  auto stopped = r.stop();
  EXPECT_EQ(stopped.status, 200u);
  EXPECT_EQ(stopped.body, R"({"success":true,"sessionId":"vs-1"})");
  EXPECT_EQ(r.lk->calls("StopEgress"), 2);
  EXPECT_EQ(field(http_fetch(r.h->http("/metrics")).body, "activeSttRelays"), "1")
      << "the stop answered after both egress streams drained: only the viewer's relay is left";
  // The fake books a stream's end on its own thread, after the close handshake: maybe just after the answer.
  EXPECT_TRUE(eventually([&] {
    for (auto& e : r.lk->egresses())
      if (!e.closed) return false;
    return true;
  })) << "the service closed the streams LiveKit did not end";
  for (auto& e : r.lk->egresses()) EXPECT_EQ(e.close_code, 1000) << e.egress_id << ": a stop's close, not a shutdown's";
  EXPECT_EQ(lines->all().find("stop bound"), std::string::npos) << lines->all();
  EXPECT_NE(lines->all().find("stopping egress"), std::string::npos) << "the unanswered StopEgress is an error";
  r.lk->stall("StopEgress", false);
  // Every chunk each stream relayed has its final in the room's transcript.
  auto t = http_fetch(r.h->http("/api/sessions/r/transcript"), "GET", {},
                      {{"Authorization", "Bearer " + r.h->cfg.service_api_secret}});
  EXPECT_EQ(t.status, 200u);
  EXPECT_NE(t.body.find(R"("speakerId":"alice")"), std::string::npos) << t.body;
  EXPECT_NE(t.body.find(R"("speakerId":"bob")"), std::string::npos) << t.body;
}

// An egress stream that dials in while the room stops (LiveKit started it just before the stop, did not end it, and its
// WebSocket came late) is no egress this service will run: it is ended from this side at once, as a stream that stops
// (close 1000 once its upstream drained what it took before the stop), not left to run unattached. Before, the stopped
// run was no longer found for the room: the stream ran on, transcribed, until LiveKit ended it.
TEST(LiveKitRoom, AStreamThatDialsInWhileTheRoomStopsIsStoppedAtOnce) {
  sw::test::echo_options eo;
  eo.drain = 300ms;
  eo.final_delay = 200ms;
  livekit_room r(
      {}, [](sw::config& c) { c.livekit.timeout = 1000ms; }, sw::test::echo_provider(eo));
  r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(1, 440));
  auto viewer = r.h->connect("r", "carol");
  expect_message(*viewer, "ready");
  ASSERT_EQ(r.start("r").status, 200u);
  ASSERT_TRUE(eventually([&] { return r.streaming("TR_A"); }, 10s));
  r.lk->stall("StopEgress", true);  // the room stays stopping for LiveKit's grace
  auto stopped = std::async(std::launch::async, [&] { return r.stop(); });
  ASSERT_TRUE(eventually([&] {
    return http_fetch(r.h->http("/metrics")).body.find(R"("egress":{"r":{"mode":"track","state":"stopping")") !=
           std::string::npos;
  }));
  sw::token_claims c;
  c.session_slug = "r";
  c.identity = "dave";
  c.name = "Dave";
  c.track_id = "TR_LATE";
  const auto token =
      sw::mint_token(c, r.h->cfg.service_api_secret, static_cast<std::int64_t>(std::time(nullptr)) + 600);
  const auto t0 = std::chrono::steady_clock::now();
  auto late = ws_client::connect("ws://127.0.0.1:" + std::to_string(r.h->port) + "/egress/audio?token=" + token);
  const auto pcm = stereo_tone(0.5, 550);
  late->send_binary(pcm.data(), pcm.size());
  ws_client::message m;
  do {
    m = late->read(10s);
  } while (m.kind == ws_client::message::text || m.kind == ws_client::message::binary);
  const auto ended_after = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(m.kind, ws_client::message::closed);
  EXPECT_EQ(m.close_code, 1000) << m.close_reason;
  EXPECT_LT(ended_after, 3s) << "ended from this side at once, not after the stop's grace of 5 s";
  auto answer = stopped.get();
  EXPECT_EQ(answer.status, 200u);
  EXPECT_EQ(answer.body, R"({"success":true,"sessionId":"vs-1"})");
  r.lk->stall("StopEgress", false);
  EXPECT_EQ(field(http_fetch(r.h->http("/metrics")).body, "activeSttRelays"), "1") << "only the viewer's relay is left";
}

// A stream still draining at the stop's bound (LiveKit's 5 s, then 2 x STT_DRAIN_TIMEOUT_MS + 5 s): the stop answers
// as usual and says so in an error line; the stream goes on to its end on its own, its finals still delivered and
// stored.
TEST(LiveKitRoom, AStreamStillDrainingAtTheStopBoundEndsOnItsOwnAfterTheAnswer) {
  sw::test::echo_options eo;
  eo.final_delay = 12s;  // finals come 12 s after their audio: after the bound (11 s after the stop)
  eo.drain = 13s;
  eo.drain_without_audio = false;  // the viewer's own stream, which sends nothing, ends at once at the end
  livekit_room r(
      {}, [](sw::config& c) { c.stt_drain_timeout = 500ms; }, sw::test::echo_provider(eo));
  auto lines = sw::test::capture_log(*r.h);
  r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(1, 440));
  auto viewer = r.h->connect("r", "carol");
  expect_message(*viewer, "ready");
  ASSERT_EQ(r.start("r").status, 200u);
  ASSERT_TRUE(
      eventually([&] { return r.of_track("TR_A").size() == 1 && r.of_track("TR_A")[0].bytes_sent > 192'000; }, 10s));

  auto stopped = r.stop();
  EXPECT_EQ(stopped.status, 200u);
  EXPECT_EQ(stopped.body, R"({"success":true,"sessionId":"vs-1"})");
  EXPECT_NE(lines->all().find("livekit: room=r: streams still draining at the stop bound"), std::string::npos)
      << lines->all();
  EXPECT_EQ(field(http_fetch(r.h->http("/metrics")).body, "activeSttRelays"), "2") << "the stream still drains";
  auto alice = [](const std::map<std::string, int>& got) { return got.count("alice") > 0; };
  EXPECT_TRUE(alice(finals_by_speaker(*viewer, alice, 10s))) << "its finals reach the room after the answer";
  ASSERT_TRUE(eventually([&] { return field(http_fetch(r.h->http("/metrics")).body, "activeSttRelays") == "1"; }, 10s))
      << "it ended on its own";
  ASSERT_TRUE(eventually(
      [&] {
        auto t = http_fetch(r.h->http("/api/sessions/r/transcript"), "GET", {},
                            {{"Authorization", "Bearer " + r.h->cfg.service_api_secret}});
        return t.status == 200 && t.body.find(R"("speakerId":"alice")") != std::string::npos;
      },
      5s))
      << "and they are stored";
}

// --- end to end: two participants, two LibriVox recordings, the offline recognizer ---------------------------------

using sw::test::as_egress;
using sw::test::librivox;
using sw::test::librivox_reference;

// What a browser streaming the same recording at 16 kHz gets from the same recognizer.
std::string heard_directly(const harness& h, const std::vector<std::int16_t>& mono, const std::string& who) {
  auto c = h.connect("direct-" + who, who);
  expect_message(*c, "ready", 10000);
  auto next = std::chrono::steady_clock::now();
  auto bytes = reinterpret_cast<const std::uint8_t*>(mono.data());
  for (std::size_t at = 0; at < mono.size() * 2; at += 640) {
    c->send_binary(bytes + at, std::min<std::size_t>(640, mono.size() * 2 - at));
    next += 10ms;
    std::this_thread::sleep_until(next);  // pacing a stream at twice real time, not waiting for an event
  }
  c->send_text(R"({"type":"stop"})");
  std::string text;
  for (;;) {
    auto m = c->read(30s);
    if (m.kind != ws_client::message::text) return text;
    if (field(m.data, "type") == "transcript_final") text += field(m.data, "text") + " ";
  }
}

// Two participants in a LiveKit room, each a different LibriVox recording upsampled to 48 kHz stereo: every final
// reaches the room's clients attributed to the right identity, the stop answers after the last one, both are stored,
// and each recording is recognized within 3 points (or one word) of word error rate of the same recording streamed at
// 16 kHz.
TEST(LiveKitRoom, ATwoPersonRoomIsTranscribedEndToEndAttributedAndStored) {
  livekit_room r(
      {}, [](sw::config& c) { c.stt_provider = "local"; }, std::nullopt, true);
  const std::string id_a = "sense_and_sensibility_01_austen_64kb-0880",
                    id_b = "sense_and_sensibility_01_austen_64kb-0890";
  auto mono_a = sw::load_audio(librivox + id_a + ".wav"), mono_b = sw::load_audio(librivox + id_b + ".wav");
  const auto direct_a = heard_directly(*r.h, mono_a, "alice"), direct_b = heard_directly(*r.h, mono_b, "bob");
  const auto audio_a = as_egress(mono_a), audio_b = as_egress(mono_b);
  r.lk->publish("meeting", "alice", "Alice", "TR_A", audio_a);
  r.lk->publish("meeting", "bob", "Bob", "TR_B", audio_b);

  auto viewer = r.h->connect("meeting", "carol");
  expect_message(*viewer, "ready", 10000);
  ASSERT_EQ(r.start("meeting", "vs-meeting").status, 200u);
  // Both recordings sent (silence follows, as from a quiet microphone), then the stop.
  ASSERT_TRUE(eventually(
      [&] {
        auto a = r.of_track("TR_A"), b = r.of_track("TR_B");
        return a.size() == 1 && b.size() == 1 && a[0].bytes_sent > audio_a.size() + 96'000 &&
               b[0].bytes_sent > audio_b.size() + 96'000;
      },
      30s));
  std::string heard_a, heard_b;
  EXPECT_EQ(r.stop("vs-meeting").status, 200u);
  EXPECT_EQ(field(http_fetch(r.h->http("/metrics")).body, "activeSttRelays"), "1")
      << "the stop answered after both egress streams drained: only the viewer's relay is left";
  for (auto& e : r.lk->egresses()) EXPECT_GE(e.pings_sent, 1u) << "the egress pinged the service meanwhile";
  // Everything the room got came before the stop answered: the viewer's own stop drains what is queued for it.
  viewer->send_text(R"({"type":"stop"})");
  int others = 0;
  for (;;) {
    auto m = viewer->read(30s);
    if (m.kind != ws_client::message::text) break;
    if (field(m.data, "type") != "transcript_final") continue;
    auto who = field(m.data, "speakerId");
    if (who == "alice") {
      EXPECT_EQ(field(m.data, "speakerName"), "Alice");
      heard_a += field(m.data, "text") + " ";
    } else if (who == "bob") {
      EXPECT_EQ(field(m.data, "speakerName"), "Bob");
      heard_b += field(m.data, "text") + " ";
    } else {
      ++others;
    }
  }
  EXPECT_EQ(others, 0);
  const double wa = sw::test::wer(librivox_reference(id_a), heard_a),
               wb = sw::test::wer(librivox_reference(id_b), heard_b);
  const double da = sw::test::wer(librivox_reference(id_a), direct_a),
               db = sw::test::wer(librivox_reference(id_b), direct_b);
  std::printf("word error rate, alice: direct %.1f %%, egress %.1f %%; bob: direct %.1f %%, egress %.1f %%\n", da * 100,
              wa * 100, db * 100, wb * 100);
  // Within 3 points, or one word of the reference where a word is more (these recordings have about 14 words).
  // PocketSphinx's live normalization follows how the audio is fed, and the egress audio comes resampled and in other
  // pieces: under load (a sanitized build with the suite around it) one word came out differently, better that time.
  auto words = [](const std::string& text) {
    std::istringstream in(text);
    return static_cast<double>(std::distance(std::istream_iterator<std::string>(in), {}));
  };
  const double slack_a = std::max(0.03, 1.0 / words(librivox_reference(id_a))) + 1e-9,
               slack_b = std::max(0.03, 1.0 / words(librivox_reference(id_b))) + 1e-9;
  EXPECT_LE(std::abs(wa - da), slack_a) << "direct: " << direct_a << "\negress: " << heard_a;
  EXPECT_LE(std::abs(wb - db), slack_b) << "direct: " << direct_b << "\negress: " << heard_b;
  EXPECT_LT(wa, 0.6);
  EXPECT_LT(wb, 0.6);
  // Stored, under each speaker.
  ASSERT_TRUE(eventually(
      [&] {
        auto t = http_fetch(r.h->http("/api/sessions/meeting/transcript"), "GET", {},
                            {{"Authorization", "Bearer " + r.h->cfg.service_api_secret}});
        return t.status == 200 && t.body.find(R"("speakerId":"alice")") != std::string::npos &&
               t.body.find(R"("speakerId":"bob")") != std::string::npos;
      },
      10s));
}

// A muted track sends nothing upstream (the fake keeps sending its audio while muted: the service drops it); the
// unmute resumes it. The relay gets exactly a third of the samples sent unmuted.
TEST(LiveKitRoom, MuteStopsAudioUpstreamAndUnmuteResumesIt) {
  auto capture = std::make_shared<sw::test::audio_capture>();
  sw::test::echo_options eo;
  eo.capture = capture;
  fake_livekit::options o;
  o.silence_after_audio = false;  // the egress ends with its recording
  livekit_room r(o, {}, sw::test::echo_provider(eo));
  r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(3, 440));
  ASSERT_EQ(r.start("r").status, 200u);
  ASSERT_TRUE(
      eventually([&] { return r.of_track("TR_A").size() == 1 && r.of_track("TR_A")[0].bytes_sent > 192'000; }, 10s));
  r.lk->mute("TR_A", true);
  ASSERT_TRUE(eventually([&] { return r.of_track("TR_A")[0].bytes_sent_muted > 192'000; }, 10s));
  r.lk->mute("TR_A", false);
  ASSERT_TRUE(eventually([&] { return r.of_track("TR_A")[0].closed; }, 10s));
  ASSERT_TRUE(eventually([&] { return field(http_fetch(r.h->http("/metrics")).body, "activeSttRelays") == "0"; }));
  auto e = r.of_track("TR_A")[0];
  const double expected = static_cast<double>(e.bytes_sent - e.bytes_sent_muted) / 6;
  EXPECT_GT(e.bytes_sent_muted, 0u);
  EXPECT_NEAR(static_cast<double>(capture->take().size()), expected, 128)
      << "sent " << e.bytes_sent << ", muted " << e.bytes_sent_muted;
}

// Webhooks are signed; nothing unsigned or altered starts anything. track_published starts the track's egress,
// participant_left stops it.
TEST(LiveKitRoom, SignedWebhooksStartAndStopTracksAndNothingElseDoes) {
  livekit_room r({});
  r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(1, 440));
  ASSERT_EQ(r.start("r").status, 200u);
  ASSERT_TRUE(eventually([&] { return r.streaming("TR_A"); }, 10s));
  r.lk->publish("r", "bob", "Bob", "TR_B", stereo_tone(1, 660));
  auto published = fake_livekit::webhook_body("track_published", "r", "bob", "TR_B");
  EXPECT_EQ(r.lk->send_webhook(published, /*wrong_secret=*/true), 401u);
  EXPECT_EQ(r.lk->send_webhook(published, false, /*tamper=*/true), 401u);
  auto hook = r.h->http("/api/livekit/webhook");
  EXPECT_EQ(http_fetch(hook, "POST", published).status, 401u) << "no Authorization";
  auto token = sw::livekit_webhook_token(r.lk->opts().api_key, r.lk->opts().api_secret, published,
                                         static_cast<std::int64_t>(std::time(nullptr)));
  EXPECT_EQ(http_fetch(hook, "POST", published, {{"Authorization", "Bearer " + token}}).status, 401u) << "raw JWT only";
  EXPECT_EQ(r.lk->calls("StartTrackEgress"), 1) << "nothing started";

  EXPECT_EQ(r.lk->send_webhook(published), 200u);
  ASSERT_TRUE(eventually([&] { return r.streaming("TR_B"); }, 10s));
  EXPECT_EQ(r.lk->calls("StartTrackEgress"), 2);
  // participant_left (bob still there as far as the fake's egress knows): the service stops bob's egress itself.
  EXPECT_EQ(r.lk->send_webhook(fake_livekit::webhook_body("participant_left", "r", "bob")), 200u);
  ASSERT_TRUE(eventually([&] { return r.of_track("TR_B")[0].status == "EGRESS_COMPLETE"; }, 10s));
  EXPECT_TRUE(r.streaming("TR_A"));
  EXPECT_GE(r.lk->calls("StopEgress"), 1);
  EXPECT_GE(sw::test::metric(*r.h, "livekit.webhooks"), 2);
  EXPECT_GE(sw::test::metric(*r.h, "livekit.webhooks_refused"), 4);
}

// A participant who leaves while their track's egress is starting (LiveKit has started it, its answer is still on its
// way): the egress is stopped once the answer comes, not left streaming (and transcribed) until the next
// reconciliation finds it an orphan (RECONCILE_INTERVAL_MS, 30 s).
TEST(LiveKitRoom, AnEgressWhoseTrackWentWhileItStartedIsStoppedWhenTheStartAnswers) {
  livekit_room r({}, [](sw::config& c) { c.livekit.timeout = 20s; });
  r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(1, 440));
  ASSERT_EQ(r.start("r").status, 200u);
  ASSERT_TRUE(eventually([&] { return r.streaming("TR_A"); }, 10s));
  r.lk->publish("r", "bob", "Bob", "TR_B", stereo_tone(1, 660));
  r.lk->publish("r", "carol", "Carol", "TR_C", stereo_tone(1, 550));
  r.lk->hold_answers("StartTrackEgress", true);
  EXPECT_EQ(r.lk->send_webhook(fake_livekit::webhook_body("track_published", "r", "bob", "TR_B")), 200u);
  ASSERT_TRUE(eventually([&] { return r.streaming("TR_B"); }, 10s)) << "LiveKit started it";
  EXPECT_EQ(r.lk->send_webhook(fake_livekit::webhook_body("participant_left", "r", "bob")), 200u);
  // carol's start is asked for after bob's leaving was taken in (the room's actor takes webhooks in order)
  EXPECT_EQ(r.lk->send_webhook(fake_livekit::webhook_body("track_published", "r", "carol", "TR_C")), 200u);
  ASSERT_TRUE(eventually([&] { return r.lk->calls("StartTrackEgress") == 3; }, 10s));
  r.lk->hold_answers("StartTrackEgress", false);
  EXPECT_TRUE(eventually([&] { return r.of_track("TR_B")[0].status == "EGRESS_COMPLETE"; }, 10s));
  EXPECT_TRUE(eventually([&] { return r.streaming("TR_C"); }, 10s));
  EXPECT_TRUE(r.streaming("TR_A"));
}

// LiveKit may list an egress before it has answered its start (ListEgress and StartTrackEgress run side by side):
// reconciliation does not take it for an orphan and stop it (it knows it by its track), and it streams on once the
// start answers.
TEST(LiveKitRoom, AnEgressListedBeforeItsStartAnswersIsNotTakenForAnOrphan) {
  livekit_room r({}, [](sw::config& c) {
    c.livekit.timeout = 20s;
    c.livekit.reconcile_interval = 200ms;
  });
  r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(1, 440));
  ASSERT_EQ(r.start("r").status, 200u);
  ASSERT_TRUE(eventually([&] { return r.streaming("TR_A"); }, 10s));
  r.lk->publish("r", "bob", "Bob", "TR_B", stereo_tone(1, 660));
  r.lk->hold_answers("StartTrackEgress", true);
  EXPECT_EQ(r.lk->send_webhook(fake_livekit::webhook_body("track_published", "r", "bob", "TR_B")), 200u);
  ASSERT_TRUE(eventually([&] { return r.streaming("TR_B"); }, 10s)) << "LiveKit started it";
  // a reconciliation asks for the list only once the one before has ended: two more, and one has seen TR_B's egress
  const int lists = r.lk->calls("ListEgress");
  ASSERT_TRUE(eventually([&] { return r.lk->calls("ListEgress") >= lists + 2; }, 10s));
  r.lk->hold_answers("StartTrackEgress", false);
  // and one more after the answer
  EXPECT_TRUE(eventually([&] { return r.lk->calls("ListEgress") >= lists + 4; }, 10s));
  EXPECT_EQ(r.lk->calls("StopEgress"), 0) << "an egress being started was stopped as an orphan";
  EXPECT_LE(sw::test::metric(*r.h, "livekit.reconciled_orphans"), 0);  // -1: never counted
  EXPECT_TRUE(r.streaming("TR_B"));
}

// Webhooks can be lost: reconciliation starts the egress of a track published without a word, restarts an egress
// that ended without a word, and stops an egress to this service that no track of it runs.
TEST(LiveKitRoom, ReconciliationRepairsLostWebhooks) {
  livekit_room r({}, [](sw::config& c) { c.livekit.reconcile_interval = 1000ms; });
  r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(1, 440));
  ASSERT_EQ(r.start("r").status, 200u);
  ASSERT_TRUE(eventually([&] { return r.streaming("TR_A"); }, 10s));
  r.lk->publish("r", "bob", "Bob", "TR_B", stereo_tone(1, 660));  // no webhook
  ASSERT_TRUE(eventually([&] { return r.streaming("TR_B"); }, 10s));
  const auto first = r.of_track("TR_A")[0].egress_id;
  r.lk->end_egress_silently(first);
  ASSERT_TRUE(eventually([&] { return r.of_track("TR_A").size() == 2 && r.streaming("TR_A"); }, 10s));
  EXPECT_GE(sw::test::metric(*r.h, "livekit.reconciled_missing"), 1);
  EXPECT_LE(sw::test::metric(*r.h, "livekit.egress_replaced"), 0) << "LiveKit's own end (EOS) is no fault";
  // An orphan: a second egress of alice's track to this service (an earlier run's), unknown to the service.
  sw::token_claims earlier{"r", "alice", "", "vs-0", "Alice", 0, "TR_A"};
  auto base = "ws://127.0.0.1:" + std::to_string(r.h->port) + "/egress/audio?token=" +
              sw::mint_token(earlier, r.h->cfg.service_api_secret, static_cast<std::int64_t>(std::time(nullptr)) + 600);
  auto token = sw::livekit_access_token(r.lk->opts().api_key, r.lk->opts().api_secret, {true, false, ""},
                                        static_cast<std::int64_t>(std::time(nullptr)));
  auto res = http_fetch(r.lk->url() + "/twirp/livekit.Egress/StartTrackEgress", "POST",
                        sw::livekit_track_egress_body("r", "TR_A", base),
                        {{"Authorization", "Bearer " + token}, {"Content-Type", "application/json"}});
  ASSERT_EQ(res.status, 200u) << res.body;
  auto orphan = sw::parse_livekit_egress(res.body)->egress_id;
  ASSERT_TRUE(eventually(
      [&] {
        for (auto& e : r.lk->egresses())
          if (e.egress_id == orphan) return e.upgrade_status == 101 && e.status == "EGRESS_COMPLETE";
        return false;
      },
      10s));
  EXPECT_GE(sw::test::metric(*r.h, "livekit.reconciled_orphans"), 1);
  EXPECT_EQ(r.lk->active_egresses("r"), 2u) << "alice's and bob's";
}

// A stream the service closes for a fault (here a flood: LiveKit sending far faster than real time) leaves LiveKit's
// egress without a stream, and LiveKit may keep reporting it ACTIVE (livekit/egress#143): the service stops that
// egress and the next reconciliation starts a new one for the track, still published. A stream LiveKit ends itself
// (EOS) is not replaced so: ReconciliationRepairsLostWebhooks.
TEST(LiveKitRoom, AnEgressWhoseStreamTheServiceClosedIsReplaced) {
  for (bool room : {false, true}) {  // a track's egress, and the room mix's (LIVEKIT_EGRESS_MODE room)
    SCOPED_TRACE(room ? "room" : "track");
    fake_livekit::options o;
    o.pace = 40;
    livekit_room r(o, [&](sw::config& c) {
      c.livekit.reconcile_interval = 1000ms;
      c.audio_max_frames_per_second = 50;
      if (room) c.livekit.egress_mode = "room";
    });
    r.lk->keep_active_when_closed(true);
    r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(1, 440));
    r.lk->set_room_audio(stereo_tone(1, 440));
    const std::string track = room ? "" : "TR_A";  // the fake's record of a mix has no track
    ASSERT_EQ(r.start("r").status, 200u);
    ASSERT_TRUE(eventually([&] { return !r.of_track(track).empty() && r.of_track(track)[0].closed; }, 20s));
    EXPECT_EQ(r.of_track(track)[0].room_mix, room);
    EXPECT_EQ(r.of_track(track)[0].close_code, 1008) << "closed by the service, for the flood";
    ASSERT_TRUE(
        eventually([&] { return r.of_track(track).size() >= 2 && r.of_track(track)[1].upgrade_status == 101; }, 20s))
        << "a new egress";
    EXPECT_EQ(r.of_track(track)[0].status, "EGRESS_COMPLETE") << "the first one stopped, not left ACTIVE";
    EXPECT_GE(sw::test::metric(*r.h, "livekit.egress_replaced"), 1);
    EXPECT_LE(sw::test::metric(*r.h, "livekit.reconciled_missing"), 0) << "LiveKit kept it ACTIVE (-1: never counted)";
  }
}

// The same for a stream whose connection broke (no close frame: a crashed egress, a network cut).
TEST(LiveKitRoom, AnEgressWhoseStreamBrokeIsReplaced) {
  livekit_room r({}, [](sw::config& c) { c.livekit.reconcile_interval = 1000ms; });
  r.lk->keep_active_when_closed(true);
  r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(1, 440));
  ASSERT_EQ(r.start("r").status, 200u);
  ASSERT_TRUE(eventually([&] { return r.streaming("TR_A"); }, 10s));
  r.lk->break_egress_stream(r.of_track("TR_A")[0].egress_id);
  // Seen at the pause after its last frames (net/server.cpp probe_end), not at the next ping (15 s).
  ASSERT_TRUE(eventually([&] { return r.of_track("TR_A").size() == 2 && r.streaming("TR_A"); }, 10s));
  EXPECT_EQ(r.of_track("TR_A")[0].close_code, 0) << "no close frame either way";
  EXPECT_EQ(r.of_track("TR_A")[0].status, "EGRESS_COMPLETE");
  EXPECT_EQ(sw::test::metric(*r.h, "livekit.egress_replaced"), 1);
}

// The service relaying egress streams to the fake Gladia `gladia`, reconciling every second.
std::unique_ptr<livekit_room> gladia_livekit_room(const sw::test::fake_gladia& gladia) {
  return std::make_unique<livekit_room>(
      fake_livekit::options{},
      [&](sw::config& c) {
        c.livekit.reconcile_interval = 1000ms;
        c.stt_provider = "gladia";
        c.gladia.api_url = gladia.url();
        c.gladia.api_key = "fake-gladia-key";
      },
      std::nullopt, true);
}

// Gladia ends the session mid-stream (1000), and the new session the relay asks for is refused five times (503): a
// failure for good. A browser is told and keeps hearing its room; an egress stream has nobody to tell, so it is closed
// 1013 and its egress replaced at the next reconciliation, with a new Gladia session. A refused key (401 at init)
// closes nothing: another egress would be refused too.
TEST(LiveKitRoom, AnEgressWhoseTranscriptionFailedForGoodIsReplaced) {
  for (bool refused : {false, true}) {
    SCOPED_TRACE(refused ? "key refused" : "Gladia went away");
    sw::test::fake_gladia gladia;
    auto room = gladia_livekit_room(gladia);
    auto& r = *room;
    if (refused) {
      gladia.fail_inits(1000, 401);
    } else {
      gladia.end_session_after(64'000);  // 2 s of the stream's 16 kHz audio
    }
    r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(3, 440));
    ASSERT_EQ(r.start("r").status, 200u);
    if (!refused) {
      ASSERT_TRUE(eventually([&] { return gladia.ws_connections() == 1; }, 10s));
      gladia.fail_inits(5, 503, "0");  // the session that would follow it: refused for good
    }
    if (refused) {
      ASSERT_TRUE(eventually([&] { return r.lk->calls("ListEgress") >= 3; }, 10s)) << "two reconciliations";
      EXPECT_EQ(r.of_track("TR_A").size(), 1u);
      EXPECT_TRUE(r.streaming("TR_A")) << "left open";
      EXPECT_EQ(gladia.init_requests(), 1);
      EXPECT_LE(sw::test::metric(*r.h, "livekit.egress_replaced"), 0);
      continue;
    }
    ASSERT_TRUE(eventually([&] { return !r.of_track("TR_A").empty() && r.of_track("TR_A")[0].closed; }, 10s));
    EXPECT_EQ(r.of_track("TR_A")[0].close_code, 1013);
    ASSERT_TRUE(eventually([&] { return r.of_track("TR_A").size() == 2 && r.streaming("TR_A"); }, 10s));
    EXPECT_TRUE(eventually([&] { return gladia.init_requests() == 7 && gladia.ws_connections() == 2; }))
        << gladia.init_requests() << " inits, " << gladia.ws_connections() << " connections";
    EXPECT_EQ(sw::test::metric(*r.h, "livekit.egress_replaced"), 1);
  }
}

// Gladia ends the session of an egress stream mid-stream (its 3-hour limit, here after 1 s): the stream goes on in a
// new Gladia session, and the egress is left as it is. The room hears the new session's transcripts.
TEST(LiveKitRoom, AnEgressWhoseGladiaSessionEndedGoesOnInANewOne) {
  sw::test::fake_gladia gladia;
  gladia.end_session_after(32'000);
  auto room = gladia_livekit_room(gladia);
  auto& r = *room;
  auto viewer = r.h->connect("r", "carol");
  expect_message(*viewer, "ready");
  r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(3, 440));
  ASSERT_EQ(r.start("r").status, 200u);
  auto heard = expect_message(*viewer, "-s2-", 10000);  // a transcript of the second session
  EXPECT_EQ(field(heard, "speaker"), "alice") << heard;
  EXPECT_GE(std::stod(field(heard, "start")), 1.0) << "the stream's time, not the new session's";
  EXPECT_EQ(gladia.init_requests(), 3) << "the viewer's own stream's, and the egress stream's two";
  EXPECT_EQ(sw::test::metric(*r.h, "gladia.sessions_renewed"), 1);
  ASSERT_TRUE(eventually([&] { return r.lk->calls("ListEgress") >= 2; }, 10s)) << "a reconciliation";
  EXPECT_EQ(r.of_track("TR_A").size(), 1u) << "not replaced";
  EXPECT_TRUE(r.streaming("TR_A"));
  EXPECT_LE(sw::test::metric(*r.h, "livekit.egress_replaced"), 0);
}

// LiveKit answering 500, refusing the credentials, timing out or not listening at all: the room's clients get a
// transcription_error with the reason, and it is counted and shown in /metrics.
TEST(LiveKitRoom, FailuresReachTheRoomsClientsAndMetrics) {
  livekit_room r({}, [](sw::config& c) { c.livekit.timeout = 500ms; });
  r.lk->publish("r", "alice", "Alice", "TR_A", stereo_tone(1, 440));
  auto viewer = r.h->connect("r", "carol");
  expect_message(*viewer, "ready");

  r.lk->fail("ListParticipants", 1, 500, "internal", "egress not connected (redis required)");
  ASSERT_EQ(r.start("r").status, 200u);
  auto m = expect_message(*viewer, "transcription_error", 5000);
  EXPECT_EQ(field(m, "reason"), "livekit_error");
  EXPECT_EQ(field(m, "sessionSlug"), "r");
  EXPECT_NE(field(m, "message").find("egress not connected (redis required)"), std::string::npos) << m;

  r.lk->fail("StartTrackEgress", 1, 401, "unauthenticated", "permissions denied");
  ASSERT_EQ(r.start("r").status, 200u);
  m = expect_message(*viewer, "transcription_error", 5000);
  EXPECT_EQ(field(m, "reason"), "livekit_unauthorized") << m;

  // 200 with a body that is no EgressInfo: an error too, said so
  r.lk->fail("StartTrackEgress", 1, 200, "none", "not an EgressInfo");
  ASSERT_EQ(r.start("r").status, 200u);
  m = expect_message(*viewer, "transcription_error", 5000);
  EXPECT_EQ(field(m, "reason"), "livekit_error") << m;
  EXPECT_NE(field(m, "message").find("LiveKit answered HTTP 200 with a body this service cannot read"),
            std::string::npos)
      << m;

  r.lk->stall("StartTrackEgress", true);
  ASSERT_EQ(r.start("r").status, 200u);
  m = expect_message(*viewer, "transcription_error", 5000);
  EXPECT_EQ(field(m, "reason"), "livekit_unreachable") << m;
  r.lk->stall("StartTrackEgress", false);

  auto metrics = http_fetch(r.h->http("/metrics")).body;
  EXPECT_GE(sw::test::metric(*r.h, "livekit.errors"), 4);
  EXPECT_NE(metrics.find(R"("failures":4)"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("lastError"), std::string::npos);
  // A start that works after all of this still starts the track once.
  ASSERT_EQ(r.start("r").status, 200u);
  ASSERT_TRUE(eventually([&] { return r.streaming("TR_A"); }, 10s));
  EXPECT_EQ(r.of_track("TR_A").size(), 1u);
}

TEST(LiveKitRoom, ALiveKitThatIsNotListeningIsReportedToo) {
  auto dead = free_port();
  livekit_room r({}, [&](sw::config& c) { c.livekit.url = "http://127.0.0.1:" + std::to_string(dead); });
  auto viewer = r.h->connect("r", "carol");
  expect_message(*viewer, "ready");
  ASSERT_EQ(r.start("r").status, 200u);
  auto m = expect_message(*viewer, "transcription_error", 5000);
  EXPECT_EQ(field(m, "reason"), "livekit_unreachable") << m;
}

// `room` mode: one egress of the room's mix (StartEgress with a WebSocket stream output); each utterance goes to the
// participant who held the floor longest during it, as the room's clients reported it, not to whoever was reported
// last when its text arrived: every final comes a second after its audio (as from a real recognizer), so the finals
// of alice's last second arrive after bob took the floor.
TEST(LiveKitRoom, RoomModeAttributesTheMixByActiveSpeakerAcrossABoundary) {
  fake_livekit::options o;
  o.pace = 1.0;  // the mix is mapped to the wall clock: real time, as LiveKit sends it
  sw::test::echo_options eo;
  eo.final_delay = 1000ms;
  eo.drain = 1500ms;
  livekit_room r(
      o, [](sw::config& c) { c.livekit.egress_mode = "room"; }, sw::test::echo_provider(eo));
  r.lk->set_room_audio(stereo_tone(3, 440));
  auto viewer = r.h->connect("r", "carol");
  expect_message(*viewer, "ready");
  auto say = [&](const std::string& who, std::int64_t at_ms) {
    auto tok = harness::token("r", who);
    auto res = http_fetch(r.h->http("/api/active-speaker"), "POST",
                          R"({"sessionSlug":"r","identity":")" + who + R"(","name":")" + who + R"(!","token":")" + tok +
                              R"(","timestamp":)" + std::to_string(at_ms) + "}");
    ASSERT_EQ(res.status, 200u);
  };
  say("alice", sw::now_ms());
  ASSERT_EQ(r.start("r").status, 200u);
  constexpr std::size_t second = 4 * 48'000;
  auto sent = [&] {
    auto e = r.lk->egresses();
    return e.size() == 1 ? e[0].bytes_sent : 0;
  };
  ASSERT_TRUE(eventually([&] { return sent() >= second * 3 / 2; }, 10s));
  say("bob", sw::now_ms());  // bob begins 1.5 s into the mix
  ASSERT_TRUE(eventually([&] { return sent() >= second * 3; }, 10s));
  r.stop();
  viewer->send_text(R"({"type":"stop"})");
  std::string order;
  std::size_t alice = 0, bob = 0, other = 0;  // bytes of 16 kHz audio per speaker, from the echo relay's texts
  for (;;) {
    auto m = viewer->read(10s);
    if (m.kind != ws_client::message::text) break;
    if (field(m.data, "type") != "transcript_final") continue;
    auto who = field(m.data, "speakerId"), text = field(m.data, "text");
    const auto bytes = static_cast<std::size_t>(std::stoul(text.substr(text.rfind(' ') + 1)));
    if (who == "alice") {
      alice += bytes;
      EXPECT_EQ(field(m.data, "speakerName"), "alice!");
      if (order.empty() || order.back() != 'a') order += 'a';
    } else if (who == "bob") {
      bob += bytes;
      if (order.empty() || order.back() != 'b') order += 'b';
    } else {
      other += bytes;
    }
  }
  EXPECT_EQ(order, "ab") << "alice until the change, bob after it";
  EXPECT_NEAR(static_cast<double>(alice), 1.5 * 32'000, 0.3 * 32'000) << "alice held the first 1.5 s";
  EXPECT_GT(bob, 32'000u);
  EXPECT_EQ(other, 0u);
  EXPECT_EQ(r.lk->calls("StartEgress"), 1);
  EXPECT_EQ(r.lk->calls("ListParticipants"), 0) << "the mix needs no participant list";
}

}  // namespace
