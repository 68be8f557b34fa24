// LiveKit Track Egress audio at GET /egress/audio: the token this service signs for an egress, 48 kHz stereo S16LE in
// frames of any size turned into the 16 kHz mono the STT relays take, mute and unmute, the end of the stream.
#include <cmath>
#include <ctime>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "apps/audio_file.hpp"
#include "proto/token.hpp"
#include "tests/support/harness.hpp"
#include "tests/support/librivox.hpp"
#include "tests/support/wer.hpp"

namespace {

using sw::net::ws_client;
using sw::test::expect_message;
using sw::test::harness;
using namespace std::chrono_literals;

constexpr double pi = 3.14159265358979323846;

std::string egress_token(const std::string& secret, const std::string& track = "TR_alice") {
  sw::token_claims c;
  c.session_slug = "room";
  c.identity = "alice";
  c.name = "Alice";
  c.track_id = track;
  return sw::mint_token(c, secret, static_cast<std::int64_t>(std::time(nullptr)) + 600);
}

std::string egress_url(const harness& h, const std::string& token) {
  return "ws://127.0.0.1:" + std::to_string(h.port) + "/egress/audio?token=" + token;
}

// `seconds` of a `hz` tone as LiveKit sends it: S16LE, 48 kHz, both channels (left louder than right).
std::vector<std::uint8_t> stereo_tone(double seconds, double hz) {
  const std::size_t n = static_cast<std::size_t>(seconds * 48'000);
  std::vector<std::uint8_t> out;
  out.reserve(n * 4);
  for (std::size_t i = 0; i < n; ++i) {
    const double v = std::sin(2 * pi * hz * static_cast<double>(i) / 48'000);
    for (double gain : {12'000.0, 4'000.0}) {
      const auto s = static_cast<std::int16_t>(std::lrint(v * gain));
      out.push_back(static_cast<std::uint8_t>(static_cast<std::uint16_t>(s) & 0xff));
      out.push_back(static_cast<std::uint8_t>(static_cast<std::uint16_t>(s) >> 8));
    }
  }
  return out;
}

// Sends `pcm` in frames of irregular sizes (cut inside samples too), as GStreamer buffers arrive.
void send_irregular(ws_client& c, const std::vector<std::uint8_t>& pcm) {
  static const std::size_t sizes[] = {1'921, 3'839, 7, 960, 4'801, 2'882, 1};
  std::size_t at = 0, k = 0;
  while (at < pcm.size()) {
    auto n = std::min(sizes[k++ % 7], pcm.size() - at);
    c.send_binary(pcm.data() + at, n);
    at += n;
  }
}

// The amplitude of `hz` in 16 kHz mono PCM16 (a single-bin DFT), and the whole signal's RMS.
std::pair<double, double> tone_and_rms(const std::string& pcm, double hz) {
  const std::size_t n = pcm.size() / 2;
  double re = 0, im = 0, energy = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto s = static_cast<std::int16_t>(static_cast<std::uint16_t>(static_cast<std::uint8_t>(pcm[2 * i]) |
                                                                  (static_cast<std::uint8_t>(pcm[2 * i + 1]) << 8)));
    const double x = s;
    re += x * std::cos(2 * pi * hz * static_cast<double>(i) / 16'000);
    im -= x * std::sin(2 * pi * hz * static_cast<double>(i) / 16'000);
    energy += x * x;
  }
  return {2 * std::sqrt(re * re + im * im) / static_cast<double>(n), std::sqrt(2 * energy / static_cast<double>(n))};
}

// The egress stream has ended and its relay has had all of its audio: the relay reported "stopped" after taking
// the resampler's tail (the listener's own relay is the one left).
// The offline recognizer drains what it holds at the speed the machine gives it: a recording under ASan beside other
// tests takes longer than a tone, hence the caller's bound.
bool relay_done(const harness& h, std::chrono::milliseconds bound = 5s) {
  return sw::test::eventually(
      [&] { return sw::test::field(sw::net::http_fetch(h.http("/metrics")).body, "activeSttRelays") == "1"; }, bound);
}

TEST(Egress, AnythingButThisServicesEgressTokenIsRefusedBeforeTheUpgrade) {
  harness h;
  for (const auto& token : {std::string(), egress_token("another-secret"),
                            harness::token("room", "alice"),  // a participant's token: wrong secret, no track
                            egress_token(h.cfg.service_api_secret, "")}) {
    try {
      ws_client::connect(egress_url(h, token));
      ADD_FAILURE() << "upgraded with " << token;
    } catch (const sw::net::upgrade_rejected& e) {
      EXPECT_EQ(e.status, 401u);
      EXPECT_NE(e.body.find("invalid_token"), std::string::npos) << e.body;
    }
  }
}

// A room with a listening participant (bob) and one egress stream (alice's track); the relays' audio is captured.
struct egress_room {
  std::shared_ptr<sw::test::audio_capture> capture = std::make_shared<sw::test::audio_capture>();
  std::unique_ptr<harness> h;
  std::unique_ptr<ws_client> listener, egress;
  egress_room() {
    sw::test::echo_options o;
    o.capture = capture;
    h = std::make_unique<harness>(std::function<void(sw::config&)>{}, sw::test::echo_provider(o));
    listener = h->connect("room", "bob");
    expect_message(*listener, "ready");
    egress = ws_client::connect(egress_url(*h, egress_token(h->cfg.service_api_secret)));
  }
};

// One second of a 440 Hz tone at 48 kHz stereo reaches the relay as one second of the same tone at 16 kHz mono (the
// channels averaged), whatever the frame sizes; transcripts carry the track owner's identity to the room's clients;
// the egress's close without a status ends the stream like a stop (the resampler's tail included).
TEST(Egress, StereoAt48kHzReachesTheRelayAsMonoAt16kHzAttributedToTheTrackOwner) {
  egress_room r;
  send_irregular(*r.egress, stereo_tone(1.0, 440));
  auto m = expect_message(*r.listener, "transcript_final");
  EXPECT_EQ(sw::test::field(m, "speakerId"), "alice");
  EXPECT_EQ(sw::test::field(m, "speakerName"), "Alice");
  r.egress->close(0);  // what the egress sends at the end: a close frame without a status (1005)
  ASSERT_TRUE(relay_done(*r.h));
  auto pcm = r.capture->take();
  EXPECT_NEAR(static_cast<double>(pcm.size()), 32'000, 64) << "one second at 16 kHz mono";
  auto [tone, rms] = tone_and_rms(pcm, 440);
  EXPECT_NEAR(tone, 8'000, 400) << "the channels' mean, 440 Hz kept";
  EXPECT_NEAR(rms, 8'000, 400) << "and nothing else";
}

// {"muted":true} stops audio upstream until {"muted":false}: nothing of what comes in between reaches the relay.
TEST(Egress, AMutedTrackSendsNothingUpstream) {
  egress_room r;
  auto second = stereo_tone(1.0, 440);
  send_irregular(*r.egress, second);
  r.egress->send_text(R"({"muted":true})");
  send_irregular(*r.egress, second);
  send_irregular(*r.egress, second);
  r.egress->send_text(R"({"muted":false})");
  send_irregular(*r.egress, second);
  r.egress->close(0);
  ASSERT_TRUE(relay_done(*r.h));
  EXPECT_NEAR(static_cast<double>(r.capture->take().size()), 64'000, 128) << "two seconds went up, not four";
}

// --- the resampler's quality: what the recognizer makes of it ---------------------------------------------------

using sw::test::librivox;

// Sends `pcm` in frames of `frame` bytes, each 20 ms of audio, at twice real time (the server's limit).
void stream_paced(ws_client& c, const std::uint8_t* pcm, std::size_t size, std::size_t frame) {
  auto next = std::chrono::steady_clock::now();
  for (std::size_t at = 0; at < size; at += frame) {
    c.send_binary(pcm + at, std::min(frame, size - at));
    next += 10ms;
    std::this_thread::sleep_until(next);  // pacing a stream, not waiting for an event
  }
}

// Reads until the server closes the stream, and returns the text of the finals of `speaker`.
std::string finals_of(ws_client& c, const std::string& speaker) {
  std::string text;
  for (;;) {
    auto m = c.read(30s);
    if (m.kind != ws_client::message::text) return text;
    if (sw::test::field(m.data, "type") == "transcript_final" && sw::test::field(m.data, "speakerId") == speaker)
      text += sw::test::field(m.data, "text") + " ";
  }
}

// A LibriVox recording sent as LiveKit's 48 kHz stereo is recognized as well as the same recording streamed at
// 16 kHz mono by a browser: the word error rates are within 3 points (the resampler adds no errors of its own).
TEST(Egress, A48kHzStereoRecordingIsRecognizedAsWellAsTheSameAt16kHz) {
  harness h([](sw::config& c) { c.stt_provider = "local"; }, std::nullopt, true);
  const std::string id = "sense_and_sensibility_01_austen_64kb-0880";
  auto mono = sw::load_audio(librivox + id + ".wav");
  const auto ref = sw::test::librivox_reference(id);
  ASSERT_FALSE(ref.empty());

  auto direct = h.connect("room", "direct");
  expect_message(*direct, "ready", 10000);
  stream_paced(*direct, reinterpret_cast<const std::uint8_t*>(mono.data()), mono.size() * 2, 640);
  direct->send_text(R"({"type":"stop"})");
  const auto heard_direct = finals_of(*direct, "direct");

  auto listener = h.connect("room", "bob");
  expect_message(*listener, "ready", 10000);
  auto egress = ws_client::connect(egress_url(h, egress_token(h.cfg.service_api_secret)));
  auto stereo = sw::test::as_egress(mono);
  stream_paced(*egress, reinterpret_cast<const std::uint8_t*>(stereo.data()), stereo.size(), 3'840);
  egress->close(0);
  ASSERT_TRUE(relay_done(h, 60s));            // the egress stream drained: its finals went to the room before
  listener->send_text(R"({"type":"stop"})");  // the room hands the listener everything before its own end
  const auto heard_egress = finals_of(*listener, "alice");

  const double wer_direct = sw::test::wer(ref, heard_direct), wer_egress = sw::test::wer(ref, heard_egress);
  std::printf("word error rate: 16 kHz mono %.1f %%, 48 kHz stereo via /egress/audio %.1f %%\n", wer_direct * 100,
              wer_egress * 100);
  EXPECT_LT(wer_direct, 0.6) << heard_direct;
  EXPECT_LE(std::abs(wer_egress - wer_direct), 0.03) << "direct: " << heard_direct << "\negress: " << heard_egress;
}

}  // namespace
