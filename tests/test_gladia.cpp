// The Gladia relay end to end: real client WebSockets -> sessions-ws -> fake Gladia (tests/fakes).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/stt_gladia.hpp"
#include "net/runtime.hpp"
#include "net/upstream.hpp"
#include "tests/fakes/fake_gladia.hpp"
#include "tests/support/harness.hpp"
#include "tests/support/pki.hpp"

namespace {

using sw::net::ws_client;
using sw::test::expect_close;
using sw::test::expect_message;
using sw::test::fake_gladia;
using sw::test::field;
using sw::test::harness;
using namespace std::chrono_literals;

std::unique_ptr<harness> gladia_harness(const fake_gladia& fake, const std::function<void(sw::config&)>& more = {}) {
  return std::make_unique<harness>(
      [&](sw::config& c) {
        c.stt_provider = "gladia";
        c.gladia.api_url = fake.url();
        c.gladia.api_key = "fake-gladia-key";
        c.stt_drain_timeout = 5000ms;
        if (more) more(c);
      },
      std::nullopt, true);
}

// Deterministic, non-repeating audio so any loss, duplicate or reordering changes it.
std::string audio(std::size_t bytes, unsigned seed = 1) {
  std::string a(bytes, '\0');
  std::uint32_t x = seed * 2654435761u;
  for (auto& c : a) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return a;
}

void stream(ws_client& c, const std::string& pcm, std::size_t frame = 640, std::chrono::milliseconds pace = 0ms) {
  for (std::size_t off = 0; off < pcm.size(); off += frame) {
    c.send_binary(pcm.data() + off, std::min(frame, pcm.size() - off));
    if (pace.count()) std::this_thread::sleep_for(pace);
  }
}

// Reads until close; returns the finals' texts and the statuses seen.
struct transcript_log {
  std::vector<std::string> finals, statuses, errors, warnings;
  std::uint16_t close_code = 0;
};
transcript_log read_all(ws_client& c, std::chrono::milliseconds limit = 10s) {
  transcript_log log;
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    auto m = c.read(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()));
    if (m.kind == ws_client::message::closed) {
      log.close_code = m.close_code;
      break;
    }
    if (m.kind != ws_client::message::text) break;
    auto type = field(m.data, "type");
    if (type == "transcript_final") log.finals.push_back(m.data);
    if (type == "stt_status") log.statuses.push_back(field(m.data, "status"));
    if (type == "error") log.errors.push_back(field(m.data, "code"));
    if (type == "warning") log.warnings.push_back(field(m.data, "code"));
  }
  return log;
}

std::vector<std::string> texts(const transcript_log& log) {
  std::vector<std::string> t;
  for (auto& f : log.finals) t.push_back(field(f, "text"));
  return t;
}

TEST(Gladia, InitBodyIsExplicitAndValid) {
  sw::config::gladia_settings g;
  g.languages = {"en", "fr"};
  auto body = sw::gladia_init_body(g);
  EXPECT_EQ(field(body, "encoding"), "wav/pcm");
  EXPECT_EQ(field(body, "sample_rate"), "16000");
  EXPECT_EQ(field(body, "bit_depth"), "16");
  EXPECT_EQ(field(body, "channels"), "1");
  EXPECT_EQ(field(body, "endpointing"), "0.3");
  EXPECT_EQ(field(body, "maximum_duration_without_endpointing"), "15.0");
  EXPECT_EQ(field(body, "language_config"), R"({"languages":["en","fr"],"code_switching":true})");
  EXPECT_NE(field(body, "messages_config").find("\"receive_acknowledgments\":true"), std::string::npos);
  EXPECT_NE(field(body, "messages_config").find("\"receive_partial_transcripts\":true"), std::string::npos);
  EXPECT_NE(field(body, "messages_config").find("\"receive_post_processing_events\":true"), std::string::npos);
}

TEST(Gladia, AudioArrivesByteExactAndStopDrainsEveryFinal) {
  fake_gladia fake;
  auto h = gladia_harness(fake, [](sw::config& c) { c.gladia.region = "eu-west"; });
  auto c = h->connect("room", "alice");
  auto pcm = audio(48'000);  // 1.5 s: one final at 1 s, the last one only after stop_recording
  stream(*c, pcm);           // sent at once: most of it before the upstream is open
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c);
  EXPECT_EQ(log.close_code, 1000);
  ASSERT_EQ(log.finals.size(), 2u);
  EXPECT_EQ(field(log.finals[0], "text"), "utterance 0");
  EXPECT_EQ(field(log.finals[1], "text"), "utterance 1");
  EXPECT_EQ(field(log.finals[1], "speaker"), "alice");
  ASSERT_FALSE(log.statuses.empty());
  EXPECT_EQ(log.statuses.front(), "connecting");
  EXPECT_EQ(log.statuses.back(), "stopped");
  EXPECT_EQ(fake.audio(), pcm);
  EXPECT_TRUE(fake.stopped());
  ASSERT_EQ(fake.init_targets().size(), 1u);
  EXPECT_EQ(fake.init_targets()[0], "/v2/live?region=eu-west");
}

// The session hands the relay its audio in ~100 ms runs: a stream that ends in the middle of one still delivers
// its tail, whether it ends with "stop" or by closing the socket.
// The socket hands a participant's frames to its session once per upstream chunk (3 200 bytes), not once per
// frame, and the session still judges every frame on its own: an odd-sized frame in the middle of a batch is
// refused with a warning, the frames around it go up byte-exact, and each accepted frame is counted.
TEST(Gladia, ASessionHearsItsSocketOncePerChunkAndStillJudgesEveryFrame) {
  fake_gladia fake;
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready", 10000);
  const auto pcm = audio(64'000);  // 100 frames of 640 bytes: 20 upstream chunks
  stream(*c, pcm.substr(0, 32'000));
  const std::string odd(641, '\x01');
  c->send_binary(odd.data(), odd.size());
  stream(*c, pcm.substr(32'000));
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c);
  EXPECT_EQ(log.close_code, 1000);
  EXPECT_EQ(log.warnings, std::vector<std::string>{"invalid_audio_frame"});
  EXPECT_EQ(fake.audio(), pcm);
  auto m = sw::net::http_fetch(h->http("/metrics")).body;
  EXPECT_EQ(field(m, "totalMessagesReceived"), "100");
  const auto handled = std::stoul(field(field(field(m, "actors"), "session"), "processed"));
  // 20 batches, plus open, ready and the other statuses, transcripts, the warning's frame, stop and close
  EXPECT_LT(handled, 50u) << "one message per frame would be over 100";
}

// Between chunks a connection holds no read buffer. It holds one (room for a chunk and a frame) while a chunk is read,
// and after a pause flushed a partial chunk (the read waiting for the next audio writes into it); once a whole chunk
// is handed over, it goes.
TEST(Gladia, AConnectionBetweenChunksHoldsNoReadBuffer) {
  fake_gladia fake;
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready", 10000);
  EXPECT_EQ(sw::test::metric(*h, "net.read_buffer_bytes"), 0) << "before any audio";
  const auto pcm = audio(640 * 13);
  stream(*c, pcm.substr(0, 3 * 640));  // three frames of a chunk of five, then a pause: flushed
  EXPECT_TRUE(sw::test::eventually([&] { return fake.audio_bytes() == 3 * 640; })) << fake.audio_bytes();
  const auto after_pause = sw::test::metric(*h, "net.read_buffer_bytes");
  EXPECT_GE(after_pause, 3200);
  EXPECT_LE(after_pause, 8192);
  stream(*c, pcm.substr(3 * 640));  // two whole chunks
  EXPECT_TRUE(sw::test::eventually([&] { return fake.audio_bytes() == pcm.size(); })) << fake.audio_bytes();
  EXPECT_TRUE(sw::test::eventually([&] { return sw::test::metric(*h, "net.read_buffer_bytes") == 0; }))
      << sw::test::metric(*h, "net.read_buffer_bytes") << " bytes held after whole chunks";
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c);
  EXPECT_EQ(log.close_code, 1000);
  EXPECT_EQ(fake.audio(), pcm);
}

// The socket reads each message in pieces straight into its batch buffer (room for a chunk and a frame): a message
// larger than that room, one split into continuation frames, a text message in fragments between audio frames and
// frames of any even size all arrive byte-exact and in order, and the text is understood.
TEST(Gladia, AudioInAnyFramingArrivesByteExact) {
  fake_gladia fake;
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready", 10000);
  const auto pcm = audio(40'000, 7);
  std::size_t at = 0;
  auto next = [&](std::size_t n) {
    auto piece = pcm.substr(at, n);
    at += n;
    return piece;
  };
  stream(*c, next(1'920));  // three 20 ms frames
  auto big = next(6'400);   // one frame, larger than the read room
  c->send_binary(big.data(), big.size());
  c->send_fragmented(false, next(3'000), 700);         // one message in five frames
  c->send_fragmented(true, R"({"type":"dance"})", 5);  // a text message in four frames, mid-batch
  auto two = next(2);
  c->send_binary(two.data(), two.size());
  c->send_fragmented(false, next(8'000), 3'000);  // larger than the room, and fragmented
  stream(*c, pcm.substr(at), 1'000);
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c);
  EXPECT_EQ(log.close_code, 1000);
  EXPECT_EQ(log.warnings, std::vector<std::string>{"unknown_message"});
  EXPECT_EQ(fake.audio().size(), pcm.size());
  EXPECT_TRUE(fake.audio() == pcm) << "the bytes differ";
}

TEST(Gladia, AStreamEndingMidChunkDeliversItsTail) {
  for (bool by_close : {false, true}) {
    SCOPED_TRACE(by_close ? "socket closed" : "stop");
    fake_gladia fake;
    auto h = gladia_harness(fake);
    auto c = h->connect("room", "alice");
    expect_message(*c, "ready");
    auto pcm = audio(11'000, by_close ? 3 : 4);  // three chunks of 3 200 bytes and 1 400 more, the last 1 000 unsent
    stream(*c, pcm, 1'000);
    if (by_close) {
      c->close();
    } else {
      c->send_text(R"({"type":"stop"})");
      EXPECT_EQ(read_all(*c).close_code, 1000);
    }
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!fake.stopped() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
    EXPECT_TRUE(fake.stopped());
    EXPECT_EQ(fake.audio().size(), pcm.size());
    EXPECT_TRUE(fake.audio() == pcm) << "the bytes differ";
  }
}

TEST(Gladia, AbruptDropResumesWithNothingLost) {
  fake_gladia fake;
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  fake.cut_after(20'000);  // abrupt TCP drop, no close frame
  auto pcm = audio(64'000, 7);
  stream(*c, pcm, 640, 1ms);
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c, 15s);
  EXPECT_EQ(log.close_code, 1000);
  EXPECT_EQ(fake.audio(), pcm);
  EXPECT_GE(fake.ws_connections(), 2);
  EXPECT_NE(std::find(log.statuses.begin(), log.statuses.end(), "connecting"), log.statuses.end());
  // No final was in flight: the stretch without finals after the drop holds no utterance, and none comes twice.
  EXPECT_EQ(texts(log), (std::vector<std::string>{"utterance 0", "utterance 1"}));
  EXPECT_LE(sw::test::metric(*h, "gladia.recovered_finals"), 0);
  auto m = sw::net::http_fetch(h->http("/metrics"));
  EXPECT_NE(field(m.body, "counters").find("\"gladia.reconnects\":1"), std::string::npos) << m.body;
}

TEST(Gladia, RetryableCloseCodeReconnects) {
  fake_gladia fake;
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  fake.cut_after(10'000, 1011);
  auto pcm = audio(40'000, 3);
  stream(*c, pcm, 640, 1ms);
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c, 15s);
  EXPECT_EQ(log.close_code, 1000);
  EXPECT_EQ(fake.audio(), pcm);
  EXPECT_EQ(fake.ws_connections(), 2);
}

TEST(Gladia, AuthCloseIsAnErrorWithoutReconnect) {
  fake_gladia fake;
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  fake.cut_after(3'200, 4401);
  stream(*c, audio(16'000));
  auto e = expect_message(*c, "\"error\"", 5000);
  EXPECT_EQ(field(e, "code"), "stt_auth_failed");
  EXPECT_EQ(field(expect_message(*c, "stopped"), "status"), "stopped");
  // Once the relay has ended nothing can reconnect any more: then the count is final.
  ASSERT_TRUE(sw::test::eventually([&] {
    return field(field(field(sw::net::http_fetch(h->http("/metrics")).body, "actors"), "gladia_relay"), "live") == "0";
  }));
  EXPECT_EQ(fake.ws_connections(), 1);
  EXPECT_TRUE(c->is_open());  // the client still hears the room
}

TEST(Gladia, InitIsRetriedOn429) {
  fake_gladia fake;
  fake.fail_inits(2, 429, "0");
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready", 10000);
  EXPECT_EQ(fake.init_requests(), 3);
  auto m = sw::net::http_fetch(h->http("/metrics"));
  EXPECT_NE(field(m.body, "counters").find("\"gladia.init_failures.429\":2"), std::string::npos) << m.body;
}

// /metrics times how long audio waits inside the server before its upstream write (gladia.relay_ms): the chunks
// read while Gladia's init is retried after 1 s (Retry-After) go out a second later, and that wait is recorded;
// chunks streamed once the upstream is open are recorded too.
TEST(GladiaMetrics, RelayLatencyIsTheWaitOfAudioInsideTheServer) {
  fake_gladia fake;
  fake.fail_inits(1, 429, "1");
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  const auto held = audio(16'000, 5);  // 0.5 s, read while the init waits out its Retry-After
  stream(*c, held);
  expect_message(*c, "ready", 10000);
  const auto paced = audio(16'000, 6);  // 0.5 s more once open, in real time
  stream(*c, paced, 640, 20ms);
  c->send_text(R"({"type":"stop"})");
  EXPECT_EQ(read_all(*c).close_code, 1000);
  EXPECT_EQ(fake.audio(), held + paced);
  auto m = sw::net::http_fetch(h->http("/metrics"));
  auto relay = field(field(m.body, "latency"), "gladia.relay_ms");
  ASSERT_NE(relay, "<missing>") << m.body;
  EXPECT_GE(std::stoll(field(relay, "count")), 2) << relay;  // the held chunks at once, then the paced ones
  EXPECT_GE(std::stod(field(relay, "maxMs")), 900.0) << relay;
}

TEST(Gladia, WrongKeyIsStttAuthFailedWithoutRetry) {
  fake_gladia fake;
  auto h = gladia_harness(fake, [](sw::config& c) { c.gladia.api_key = "wrong"; });
  auto c = h->connect("room", "alice");
  auto e = expect_message(*c, "\"error\"", 5000);
  EXPECT_EQ(field(e, "code"), "stt_auth_failed");
  EXPECT_NE(field(e, "message").find("gladia key not found"), std::string::npos) << e;
  EXPECT_EQ(field(expect_message(*c, "stopped"), "status"), "stopped");
  EXPECT_EQ(fake.init_requests(), 1);
}

TEST(Gladia, BadRequestIsNotRetried) {
  fake_gladia fake;
  fake.fail_inits(1, 400);
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  EXPECT_EQ(field(expect_message(*c, "\"error\"", 5000), "code"), "stt_unavailable");
  EXPECT_EQ(fake.init_requests(), 1);
}

// A 201 whose session url is no WebSocket url (a broken or hostile upstream) ends the stream at once, as one without
// a url does: retrying it would only open more sessions. The url carries the session's token: it is shown to nobody.
TEST(Gladia, ASessionUrlThatIsNoWebSocketUrlIsNeitherRetriedNorShown) {
  fake_gladia fake;
  fake.answer_inits_with_url("https://localhost:1/v2/live?token=tok-leaked");
  auto h = gladia_harness(fake);
  auto log = sw::test::capture_log(*h);
  auto c = h->connect("room", "alice");
  auto e = expect_message(*c, "\"error\"", 5000);
  EXPECT_EQ(field(e, "code"), "stt_unavailable");
  EXPECT_NE(field(e, "message").find("session url"), std::string::npos) << e;
  EXPECT_EQ(e.find("tok-leaked"), std::string::npos) << e;
  EXPECT_EQ(field(expect_message(*c, "stopped"), "status"), "stopped");
  EXPECT_EQ(fake.init_requests(), 1);
  EXPECT_EQ(fake.ws_connections(), 0);
  EXPECT_EQ(sw::test::metric(*h, "gladia.init_failures.bad_response"), 1);
  EXPECT_NE(log->all().find("session url"), std::string::npos) << log->all();
  EXPECT_EQ(log->all().find("tok-leaked"), std::string::npos) << log->all();
}

// Gladia's error message is quoted, but not whole: a body of megabytes would otherwise reach the client and the log.
TEST(Gladia, AnInitErrorsMessageIsQuotedInPart) {
  fake_gladia fake;
  fake.fail_inits(1, 400, {}, std::string(100'000, 'x'));
  auto h = gladia_harness(fake);
  auto log = sw::test::capture_log(*h);
  auto c = h->connect("room", "alice");
  const auto message = field(expect_message(*c, "\"error\"", 5000), "message");
  EXPECT_EQ(message, "Gladia init failed with HTTP 400: " + std::string(300, 'x') + "…");
  EXPECT_EQ(field(expect_message(*c, "stopped"), "status"), "stopped");
  ASSERT_TRUE(sw::test::eventually([&] { return log->all().find(std::string(300, 'x') + "…") != std::string::npos; }))
      << log->all().size();
  EXPECT_LT(log->all().size(), 2'000u);
}

TEST(Gladia, TwoParticipantsGetDistinctUtteranceIds) {
  fake_gladia fake;
  auto h = gladia_harness(fake);
  auto a = h->connect("room", "alice");
  auto b = h->connect("room", "bob");
  expect_message(*a, "ready");
  expect_message(*b, "ready");
  stream(*a, audio(32'000, 1));
  auto fa = expect_message(*b, "transcript_final", 5000);
  stream(*b, audio(32'000, 2));
  std::string fb;
  for (;;) {
    fb = expect_message(*a, "transcript_final", 5000);
    if (field(fb, "speaker") == "bob") break;
  }
  EXPECT_EQ(field(fa, "text"), field(fb, "text"));  // both upstream ids are 00_00000000
  EXPECT_NE(field(fa, "utteranceId"), field(fb, "utteranceId"));
}

TEST(Gladia, UnknownMessageTypesAreCountedAndIgnored) {
  fake_gladia fake;
  fake.send_unknown_types(true);
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  stream(*c, audio(32'000));
  expect_message(*c, "transcript_final", 5000);
  auto m = sw::net::http_fetch(h->http("/metrics"));
  EXPECT_NE(field(m.body, "counters").find("\"gladia.unknown_messages\":1"), std::string::npos) << m.body;
}

TEST(Gladia, FiftyConcurrentRelays) {
  fake_gladia fake;
  auto h = gladia_harness(fake);
  std::vector<std::unique_ptr<ws_client>> cs;
  for (int i = 0; i < 50; ++i) cs.push_back(h->connect("room-" + std::to_string(i % 5), "p" + std::to_string(i)));
  for (int i = 0; i < 50; ++i) stream(*cs[i], audio(8'000, static_cast<unsigned>(i + 1)));
  for (auto& c : cs) c->send_text(R"({"type":"stop"})");
  int closed_1000 = 0;
  for (auto& c : cs) {
    auto code = expect_close(*c, 15000);
    closed_1000 += code == 1000;
  }
  EXPECT_EQ(closed_1000, 50);
  EXPECT_EQ(fake.sessions(), 50u);
}

}  // namespace

namespace {

TEST(GladiaBuffer, ReplayBufferIsBoundedAndDropsAreCounted) {
  fake_gladia fake;
  fake.withhold_acks(true);
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_replay_buffer_bytes = 32'000; });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  auto pcm = audio(64'000, 5);
  stream(*c, pcm, 640, 1ms);
  c->send_text(R"({"type":"stop"})");
  EXPECT_EQ(read_all(*c).close_code, 1000);
  EXPECT_EQ(fake.audio(), pcm);  // the connection held: everything was delivered
  auto m = sw::net::http_fetch(h->http("/metrics"));
  // Dropped from the buffer, but only after they went out: Gladia had them all along, so nothing counts as lost.
  EXPECT_NE(field(m.body, "counters").find("\"gladia.dropped_bytes\":0"), std::string::npos) << m.body;
  EXPECT_NE(field(m.body, "counters").find("\"gladia.dropped_unacked_bytes\":32000"), std::string::npos) << m.body;
  // It ended holding 32 000 unacknowledged bytes: once it is gone, they leave the gauge.
  EXPECT_TRUE(sw::test::eventually([&] { return sw::test::metric(*h, "stt.buffered_bytes") == 0; }))
      << sw::test::metric(*h, "stt.buffered_bytes");
}

class GladiaTls : public ::testing::Test {
protected:
  static void SetUpTestSuite() { pki = new sw::test::test_pki(); }
  static void TearDownTestSuite() { delete pki; }
  static sw::test::test_pki* pki;
  fake_gladia::options tls_options() const {
    fake_gladia::options o;
    o.tls_cert_file = pki->file("server.pem");
    o.tls_key_file = pki->file("server.key");
    return o;
  }
};
sw::test::test_pki* GladiaTls::pki = nullptr;

TEST_F(GladiaTls, WorksWithTheTestCa) {
  ASSERT_TRUE(pki->ok);
  fake_gladia fake(tls_options());
  auto h = gladia_harness(fake, [&](sw::config& c) { c.gladia.ca_file = pki->file("ca.pem"); });
  auto c = h->connect("room", "alice");
  auto pcm = audio(32'000, 9);
  stream(*c, pcm);
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c);
  EXPECT_EQ(log.close_code, 1000);
  EXPECT_EQ(log.finals.size(), 1u);
  EXPECT_EQ(fake.audio(), pcm);
}

TEST_F(GladiaTls, WrongCaFailsWithAClearError) {
  ASSERT_TRUE(pki->ok);
  fake_gladia fake(tls_options());
  auto h = gladia_harness(fake, [&](sw::config& c) { c.gladia.ca_file = pki->file("other-ca.pem"); });
  auto c = h->connect("room", "alice");
  auto e = expect_message(*c, "\"error\"", 60000);
  EXPECT_EQ(field(e, "code"), "stt_unavailable");
  EXPECT_NE(field(e, "message").find("certificate verify failed"), std::string::npos) << e;
  EXPECT_EQ(fake.init_requests(), 0);
}

}  // namespace

namespace {

// Gladia's connection ends (a TCP FIN, no close frame) in the same segment as its last acknowledgment, while the relay
// has nothing more to send (the stream's audio all sent, some of it not acknowledged). The read that takes the
// acknowledgment does not see the end, and no other read comes: a second into the client's pause without an
// acknowledgment, the relay asks the connection, finds the end, reconnects and replays. Not the ack watchdog (30 s
// here), nor the ping (15 s).
TEST(GladiaFaults, AnEndThatCameWithTheLastAcknowledgmentIsFoundASecondIntoAPause) {
  fake_gladia fake;
  fake.end_with_ack_after(16'000);  // the fifth chunk acknowledged, the end with it
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_ack_timeout = 30'000ms; });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  auto pcm = audio(32'000, 4);  // 1 s, sent at once
  stream(*c, pcm);
  const auto sent = std::chrono::steady_clock::now();
  ASSERT_TRUE(sw::test::eventually([&] { return fake.ws_connections() >= 2; }, 5s)) << "the end went unseen";
  EXPECT_LT(std::chrono::steady_clock::now() - sent, 3s);
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c, 15s);
  EXPECT_EQ(log.close_code, 1000);
  EXPECT_TRUE(log.errors.empty()) << ::testing::PrintToString(log.errors);
  EXPECT_EQ(fake.audio(), pcm) << "the five chunks not acknowledged went again";
  EXPECT_EQ(sw::test::metric(*h, "gladia.reconnects"), 1);
  EXPECT_LE(sw::test::metric(*h, "gladia.ack_timeouts"), 0);
}

// The same end with the stream's last chunk, every byte acknowledged and the stop sent: the relay awaits only Gladia's
// end, which came unseen. A second after the stop it asks the connection, finds the end, reconnects and sends the stop
// again: the stream ends then, not at the drain bound (30 s here).
TEST(GladiaFaults, AnEndThatCameWithTheLastAcknowledgmentIsFoundASecondAfterTheStop) {
  fake_gladia fake;
  fake.end_with_ack_after(28'800);  // the tenth and last chunk acknowledged, the end with it
  auto h = gladia_harness(fake, [](sw::config& c) {
    c.stt_ack_timeout = 30'000ms;
    c.stt_drain_timeout = 30'000ms;
  });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  auto pcm = audio(32'000, 6);  // 1 s, sent at once
  stream(*c, pcm);
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c, 15s);
  EXPECT_EQ(log.close_code, 1000) << "the end went unseen";
  EXPECT_TRUE(log.errors.empty()) << ::testing::PrintToString(log.errors);
  EXPECT_EQ(fake.audio(), pcm);
  EXPECT_EQ(texts(log), (std::vector<std::string>{"utterance 0"}));
  EXPECT_EQ(fake.ws_connections(), 2);
  EXPECT_TRUE(fake.stopped());
  EXPECT_LE(sw::test::metric(*h, "gladia.drain_timeouts"), 0);
}

TEST(GladiaFaults, DelayedAcksAndADropStillLoseNothing) {
  fake_gladia fake;
  fake.delay_acks(std::chrono::milliseconds(15));  // more audio in flight, unacknowledged, when the drop comes
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  fake.cut_after(30'000);
  auto pcm = audio(60'000, 11);
  stream(*c, pcm, 640, 1ms);
  c->send_text(R"({"type":"stop"})");
  EXPECT_EQ(read_all(*c, 20s).close_code, 1000);
  EXPECT_EQ(fake.audio(), pcm);
  auto m = sw::net::http_fetch(h->http("/metrics"));
  auto replayed = field(field(m.body, "counters"), "gladia.replayed_bytes");
  ASSERT_NE(replayed, "<missing>") << m.body;
  EXPECT_GT(std::stoll(replayed), 0) << "unacknowledged audio must have been replayed";
}

}  // namespace

namespace {

// The fake speaks Gladia's protocol on its own: base64 JSON chunks and binary frames interleave in one stream.
TEST(FakeGladia, AcceptsBase64AndBinaryChunksWithCumulativeAcks) {
  fake_gladia fake;
  auto init = sw::net::http_fetch(fake.url() + "/v2/live", "POST", R"({"encoding":"wav/pcm","sample_rate":16000})",
                                  {{"x-gladia-key", "fake-gladia-key"}, {"Content-Type", "application/json"}});
  ASSERT_EQ(init.status, 201u) << init.body;
  auto ws = ws_client::connect(field(init.body, "url"));
  auto first = audio(3'200, 21), second = audio(1'600, 22);
  std::string b64(4 * ((first.size() + 2) / 3) + 1, '\0');
  auto n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(&b64[0]),
                           reinterpret_cast<const unsigned char*>(first.data()), static_cast<int>(first.size()));
  b64.resize(static_cast<std::size_t>(n));
  ws->send_text(R"({"type":"audio_chunk","data":{"chunk":")" + b64 + "\"}}");
  auto ack = expect_message(*ws, "\"audio_chunk\"");
  EXPECT_EQ(field(field(ack, "data"), "byte_range"), "[0,3200]");
  ws->send_binary(second.data(), second.size());
  ack = expect_message(*ws, "\"audio_chunk\"");
  EXPECT_EQ(field(field(ack, "data"), "byte_range"), "[3200,4800]");
  EXPECT_EQ(fake.audio(), first + second);
  auto bad = sw::net::http_fetch(fake.url() + "/v2/live", "POST", R"({"sample_rate":12345})",
                                 {{"x-gladia-key", "fake-gladia-key"}});
  EXPECT_EQ(bad.status, 400u);
  EXPECT_NE(field(bad.body, "validation_errors"), "<missing>") << bad.body;
  EXPECT_EQ(sw::net::http_fetch(fake.url() + "/v2/live", "POST", "{}").status, 401u);
}

}  // namespace

namespace {

using sw::test::eventually;
using sw::test::metric;

// An upstream that stops reading but keeps its socket open: the relay notices within STT_ACK_TIMEOUT_MS (nothing
// acknowledged while audio is outstanding), says "connecting", reconnects and replays; nothing is lost.
TEST(GladiaStall, AStalledUpstreamIsReconnectedWithinTheAckTimeoutAndNothingIsLost) {
  fake_gladia fake;
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_ack_timeout = 1000ms; });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  fake.stall_after(9'600);
  auto pcm = audio(64'000, 13);
  stream(*c, pcm, 640, 1ms);
  ASSERT_TRUE(eventually([&] { return fake.stalls() == 1; }));
  const auto stalled_at = std::chrono::steady_clock::now();
  EXPECT_EQ(field(expect_message(*c, "connecting", 5000), "status"), "connecting");
  expect_message(*c, "ready", 5000);
  // the bound, plus the first reconnect's backoff (300 ms) and room for a slow (sanitized) build
  EXPECT_LT(std::chrono::steady_clock::now() - stalled_at, 1000ms + 300ms + 1500ms);
  c->send_text(R"({"type":"stop"})");
  EXPECT_EQ(read_all(*c, 15s).close_code, 1000);
  EXPECT_TRUE(fake.audio() == pcm) << "got " << fake.audio().size() << " of " << pcm.size() << " bytes";
  EXPECT_EQ(metric(*h, "gladia.ack_timeouts"), 1);
  EXPECT_EQ(fake.ws_connections(), 2);
}

// An upstream that stops acknowledging times out every stream at once: each is counted and reconnects, and the log
// has one error line for all of them, not one a stream (an outage with thousands of streams would flood it).
TEST(GladiaStall, AnOutageOfEveryStreamIsOneErrorLineNotOneAStream) {
  fake_gladia fake;
  fake.withhold_acks(true);
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_ack_timeout = 500ms; });
  auto log = sw::test::capture_log(*h);
  auto timeout_lines = [&] {  // the error lines about ack timeouts: each stream's, or their count
    std::vector<std::string> out;
    for (auto& l : log->lines())
      if (l.error &&
          (l.text.find("nothing acknowledged") != std::string::npos || l.text.rfind("gladia.ack_timeouts:", 0) == 0))
        out.push_back(l.text);
    return out;
  };
  std::vector<std::unique_ptr<ws_client>> cs;
  for (int i = 0; i < 8; ++i) {
    cs.push_back(h->connect("room-" + std::to_string(i), "user-" + std::to_string(i)));
    expect_message(*cs.back(), "ready");
  }
  for (auto& c : cs) stream(*c, audio(3'200, 3));  // a chunk each, never acknowledged
  ASSERT_TRUE(eventually([&] { return metric(*h, "gladia.ack_timeouts") >= 8; })) << metric(*h, "gladia.ack_timeouts");
  EXPECT_EQ(timeout_lines().size(), 1u)
      << "every stream timed out within the bound of one another, well within a second";
  fake.withhold_acks(false);  // the reconnected streams are acknowledged: no more timeouts
  // how many were left out, a second later, with no other stream timing out then
  EXPECT_TRUE(eventually(
      [&] {
        const auto lines = timeout_lines();
        return lines.size() >= 2 && lines[1].rfind("gladia.ack_timeouts: ", 0) == 0;
      },
      3s))
      << log->all();
  for (auto& c : cs) c->send_text(R"({"type":"stop"})");
  for (auto& c : cs) EXPECT_EQ(read_all(*c, 15s).close_code, 1000);
}

// What a relay driven straight from a test reports: the statuses it sends its session.
struct status_log {
  std::mutex mu;
  std::vector<std::string> seen;
  bool has(const std::string& s) {
    std::lock_guard<std::mutex> l(mu);
    return std::find(seen.begin(), seen.end(), s) != seen.end();
  }
};
sw::stt_listener_actor::behavior_type record_statuses(sw::stt_listener_actor::pointer,
                                                      std::shared_ptr<status_log> log) {
  return {
      [](sw::heard_atom, const sw::stt_transcript&) {},
      [log](sw::status_atom, const sw::stt_status& s) {
        std::lock_guard<std::mutex> l(log->mu);
        log->seen.push_back(s.status);
      },
      [](sw::error_atom, const sw::stt_error&) {},
  };
}

sw::audio_chunk chunk_of(const std::string& pcm) {
  sw::audio_chunk c;
  c.pcm.assign(pcm.begin(), pcm.end());
  return c;
}

// A Gladia relay of the service's driven straight from a test: its session is a status_log, and its upstream connection
// runs on an I/O thread of the test's own (`io`), which the test can hold.
struct relay_on_own_io {
  explicit relay_on_own_io(const sw::test::harness& h)
      : io(std::make_shared<sw::net::io_runtime>(1)),
        ctx(std::make_shared<const sw::service_context>(h.svc->context())),  // the provider holds it weakly
        provider(sw::gladia_provider(ctx, std::make_shared<sw::net::outbound>(io))),
        statuses(std::make_shared<status_log>()) {
    auto& sys = h.svc->system();
    listener = sys.spawn(record_statuses, statuses);
    sw::stream_identity who;
    who.stream_id = 1;
    who.session_slug = "room";
    relay = provider.spawn(sys, who, listener);
  }
  // however the test ends: the listener goes (and the relay, which monitors it), so the service can stop
  ~relay_on_own_io() { caf::anon_send_exit(listener, caf::exit_reason::user_shutdown); }
  bool ready() const {
    return relay && eventually([&] { return statuses->has("ready"); });
  }

  std::shared_ptr<sw::net::io_runtime> io;
  std::shared_ptr<const sw::service_context> ctx;
  sw::stt_provider provider;
  std::shared_ptr<status_log> statuses;
  sw::stt_listener_actor listener;
  sw::stt_relay_actor relay;
};

// Audio that reaches the relay while a timed-out connection is being dropped does not time that connection out a
// second time: one dropped connection, one ack timeout, one reconnect. The relay once left the drop to the I/O
// threads' report of it; audio in between armed the watchdog again (1 ms, the connection being long overdue) and
// counted the same timeout twice: a soak of 200 streams against an ASan server counted 205 for 200 reconnects.
// Here the relay runs on I/O threads of the test's own, which it holds while the audio arrives.
TEST(GladiaStall, AudioWhileATimedOutConnectionIsDroppedDoesNotTimeItOutAgain) {
  fake_gladia fake;
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_ack_timeout = 300ms; });
  relay_on_own_io r(*h);
  ASSERT_TRUE(r.ready());
  auto& io = r.io;
  auto& relay = r.relay;
  auto& statuses = r.statuses;

  fake.withhold_acks(true);
  const auto first = audio(3'200, 7), second = audio(3'200, 8);
  caf::anon_send(relay, sw::audio_atom::value, chunk_of(first));
  ASSERT_TRUE(eventually([&] { return fake.audio_bytes() == first.size(); }));
  std::promise<void> holding, release;
  auto released = release.get_future().share();
  boost::asio::post(io->context(), [&holding, released] {
    holding.set_value();
    released.wait();
  });
  holding.get_future().wait();  // the I/O thread is held: the abort waits, and so does its `closed`
  ASSERT_TRUE(eventually([&] { return metric(*h, "gladia.ack_timeouts") == 1; }));
  caf::anon_send(relay, sw::audio_atom::value, chunk_of(second));
  EXPECT_FALSE(eventually([&] { return metric(*h, "gladia.ack_timeouts") > 1; }, 500ms))
      << "the same connection timed out twice";
  fake.withhold_acks(false);
  release.set_value();

  // the first chunk, never acknowledged, goes again on the new connection, then the second
  EXPECT_TRUE(eventually([&] { return fake.audio() == first + first + second; }))
      << "got " << fake.audio().size() << " of " << 2 * first.size() + second.size() << " bytes";
  caf::anon_send(relay, sw::stop_atom::value);
  EXPECT_TRUE(eventually([&] { return statuses->has("stopped"); }));
  EXPECT_EQ(metric(*h, "gladia.ack_timeouts"), 1);
  EXPECT_EQ(metric(*h, "gladia.reconnects"), 1);
  EXPECT_EQ(fake.ws_connections(), 2);
  io->stop();
}

// Audio that waits for the upstream (on a busy server, after a reconnect) goes in a few writes, not in one round trip
// through the relay and the I/O thread per chunk: the relay hands the connection up to 16 chunks at once and the
// connection writes what waits in one system call. A relay that kept one write in flight sent 100 ms of audio per two
// rounds of a busy I/O thread, fell ever further behind and filled its replay buffer. Here the relay's upstream runs
// on an I/O thread of the test's own, which is held 200 ms at a time (one round of everything else between two holds).
TEST(GladiaBusy, ABacklogGoesUpstreamInAFewRoundsOfABusyIoThread) {
  fake_gladia fake;
  auto h = gladia_harness(fake);
  relay_on_own_io r(*h);
  ASSERT_TRUE(r.ready());
  auto& io = r.io;
  auto& relay = r.relay;
  auto& statuses = r.statuses;

  struct busy_thread {
    std::atomic<bool> stop{false};
    std::atomic<int> rounds{0};
  };
  auto busy = std::make_shared<busy_thread>();
  std::shared_ptr<void> calm(nullptr, [busy](void*) { busy->stop = true; });  // however the test ends
  // One hold at a time, each posting the next behind everything else that is ready (it refers to nothing of the
  // test's stack: it may outlive a failed test until `calm` stops it).
  struct hold_round {
    std::shared_ptr<busy_thread> busy;
    boost::asio::io_context* context;
    void operator()() const {
      if (busy->stop) return;
      std::this_thread::sleep_for(200ms);
      ++busy->rounds;
      boost::asio::post(*context, *this);
    }
  };
  boost::asio::post(io->context(), hold_round{busy, &io->context()});
  ASSERT_TRUE(eventually([&] { return busy->rounds.load() >= 1; }));
  const int before = busy->rounds;
  const auto pcm = audio(30 * 3'200, 41);  // 3 s of audio at once: 30 upstream chunks
  caf::anon_send(relay, sw::audio_atom::value, chunk_of(pcm));
  ASSERT_TRUE(eventually([&] { return fake.audio_bytes() == pcm.size(); }, 60s))
      << fake.audio_bytes() << " of " << pcm.size() << " bytes after " << busy->rounds - before << " rounds";
  EXPECT_LE(busy->rounds - before, 12) << "rounds of the I/O thread for 30 chunks";
  EXPECT_TRUE(fake.audio() == pcm);
  busy->stop = true;
  caf::anon_send(relay, sw::stop_atom::value);
  EXPECT_TRUE(eventually([&] { return statuses->has("stopped"); }, 10s));
  io->stop();
}

// A stalled upstream is also found by its silence: unanswered pings close the connection after two ping
// intervals, long before the ack timeout.
TEST(GladiaStall, AnUpstreamThatAnswersNoPingIsReconnected) {
  fake_gladia fake;
  auto h = gladia_harness(fake, [](sw::config& c) {
    c.ws_ping_interval = 300ms;
    c.ws_pong_timeout = 60'000ms;  // the test's own client answers only while it reads
  });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  fake.stall_after(9'600);
  auto pcm = audio(12'800, 37);
  stream(*c, pcm);
  ASSERT_TRUE(eventually([&] { return fake.stalls() == 1; }));
  const auto stalled_at = std::chrono::steady_clock::now();
  expect_message(*c, "connecting", 5000);
  EXPECT_LT(std::chrono::steady_clock::now() - stalled_at, 2 * 300ms + 1500ms);
  expect_message(*c, "ready", 5000);
  c->send_text(R"({"type":"stop"})");
  EXPECT_EQ(read_all(*c, 15s).close_code, 1000);
  EXPECT_TRUE(fake.audio() == pcm);
  EXPECT_EQ(metric(*h, "gladia.ack_timeouts"), -1) << "the pings found it, not the ack timeout";
}

// While the upstream is stalled the relay keeps at most STT_REPLAY_BUFFER_BYTES of a stream (written from that buffer,
// at most 16 chunks handed to the connection ahead of their write), dropping whole chunks, counted.
TEST(GladiaStall, AStalledStreamHoldsAtMostTheReplayBuffer) {
  fake_gladia fake;
  const std::size_t limit = 32'000;
  auto h = gladia_harness(fake, [&](sw::config& c) {
    c.stt_ack_timeout = 60'000ms;
    c.stt_replay_buffer_bytes = limit;
  });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  fake.stall_after(3'200);
  stream(*c, audio(150'000, 17), 640, 1ms);  // under the 5 s burst of the rate limit: all of it is accepted
  ASSERT_TRUE(eventually([&] { return metric(*h, "net.frames_in") >= 235; }));
  // Everything accounted for: what Gladia took, what is held and what was dropped, apart: bytes that never left
  // (gladia.dropped_bytes) and bytes written to the stalled connection but never acknowledged (they sit in the
  // socket buffers, which take far more than this test sends).
  long long held = 0, never_sent = 0, unacked = 0;
  ASSERT_TRUE(eventually([&] {
    held = metric(*h, "stt.buffered_bytes");
    never_sent = std::max(0LL, metric(*h, "gladia.dropped_bytes"));
    unacked = std::max(0LL, metric(*h, "gladia.dropped_unacked_bytes"));
    return never_sent + unacked + held == 150'000 - 3'200;
  }));
  EXPECT_GT(held, 0);
  EXPECT_LE(held, static_cast<long long>(limit));
  EXPECT_GT(unacked, 0) << "what went out on the stalled connection is not counted as never sent";
  EXPECT_EQ((never_sent + unacked) % 3'200, 0) << "drops are whole chunks";
}

// A stream that goes quiet in the middle of an upstream chunk: its tail goes within STT_CHUNK_FLUSH_MS, so the
// upstream can end the utterance and its final comes without a stop.
TEST(GladiaFlush, AQuietStreamDeliversItsTailWithinTheFlushBoundAndItsFinalComesWithoutStop) {
  fake_gladia::options o;
  o.final_every_chunks = 4;  // the fourth upstream chunk (the short tail) ends the utterance
  fake_gladia fake(o);
  fake.record_arrivals(true);
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_chunk_flush = 100ms; });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  auto pcm = audio(3 * 3'200 + 1'400, 19);
  stream(*c, pcm);
  const auto last_sent = std::chrono::steady_clock::now();
  auto final = expect_message(*c, "transcript_final", 5000);
  EXPECT_EQ(field(final, "text"), "utterance 0");
  ASSERT_EQ(fake.audio_bytes(), pcm.size());
  EXPECT_TRUE(fake.audio() == pcm);
  auto arrivals = fake.arrivals();
  ASSERT_EQ(arrivals.size(), 4u);
  EXPECT_EQ(arrivals.back().end, pcm.size());
  EXPECT_GE(arrivals.back().at - last_sent, 90ms) << "the tail waits for more audio first";
  EXPECT_LT(arrivals.back().at - last_sent, 100ms + 600ms);
}

// After a pause that flushed a partial chunk, the chunks of the resumed audio count from the flush: the fifth frame
// after it completes a chunk and that chunk goes at once. (They once counted from the start of the stream in net/ and
// from the flush in the session, so every later chunk waited for up to four more frames, 80 ms, until the end of
// the stream: the loadgen's steady window found it after its own 300 ms stall.)
TEST(GladiaFlush, AfterAPauseTheNextChunkGoesWithItsLastFrame) {
  fake_gladia fake;
  fake.record_arrivals(true);
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_chunk_flush = 1000ms; });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  const auto head = audio(3 * 640, 59), next = audio(2 * 3'200, 61);
  stream(*c, head);
  ASSERT_TRUE(eventually([&] { return fake.audio_bytes() == head.size(); }, 5s)) << "the pause flushes the tail";
  stream(*c, next.substr(0, 3'200));
  // well before the next flush could send it (a second after the last frame)
  EXPECT_TRUE(eventually([&] { return fake.audio_bytes() == head.size() + 3'200; }, 500ms))
      << "the chunk waits: " << fake.audio_bytes() << " bytes upstream";
  stream(*c, next.substr(3'200));
  EXPECT_TRUE(eventually([&] { return fake.audio_bytes() == head.size() + next.size(); }, 500ms))
      << fake.audio_bytes() << " bytes upstream";
  auto arrivals = fake.arrivals();
  ASSERT_EQ(arrivals.size(), 3u);
  EXPECT_EQ(arrivals[0].end, head.size());
  EXPECT_EQ(arrivals[1].end, head.size() + 3'200) << "whole chunks again after the flush";
  EXPECT_TRUE(fake.audio() == head + next);
}

// A client on a bare socket (TCP_NODELAY), for writes that cut frames where a test says; it never reads (what the
// server sends waits in the socket's buffers). Frames are masked with a zero key.
struct raw_client {
  int fd = -1;
  raw_client(std::uint16_t port, const std::string& token) {
    fd = sw::test::connect_loopback(port);
    if (fd < 0) throw std::runtime_error("connect");
    int on = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    write("GET /api/realtime/transcribe?token=" + token +
          " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    std::string head;
    char ch;
    while (head.find("\r\n\r\n") == std::string::npos && ::recv(fd, &ch, 1, 0) == 1) head += ch;
    if (head.rfind("HTTP/1.1 101", 0) != 0) throw std::runtime_error("no upgrade: " + head);
  }
  ~raw_client() { ::close(fd); }
  static std::string frame(const std::string& payload) {
    std::string f = "\x82";
    if (payload.size() < 126) {
      f += static_cast<char>(0x80 | payload.size());
    } else {
      f += static_cast<char>(0x80 | 126);
      f += static_cast<char>(payload.size() >> 8);
      f += static_cast<char>(payload.size() & 0xff);
    }
    return f + std::string(4, '\0') + payload;
  }
  void write(const std::string& bytes) {
    for (std::size_t at = 0; at < bytes.size();) {
      const auto n = ::send(fd, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
      if (n <= 0) throw std::runtime_error("send");
      at += static_cast<std::size_t>(n);
    }
  }
};

// While audio flows, each chunk waits in the kernel until its last byte is in (SO_RCVLOWAT: client_layer.hpp), and
// goes upstream then: with frames that make up a chunk, with frames that do not divide it, and with the last frame of
// a chunk cut in two writes, the first of which wakes the read in the middle of that frame (what was read of it
// counts). With STT_CHUNK_FLUSH_MS at a second, a chunk held a byte too long would go only when the pause watch
// releases it, a second later. The socket is read once a chunk, not once a frame.
TEST(GladiaHold, EachChunkGoesUpstreamWithItsLastByteWhereverTheFramesAreCut) {
  fake_gladia fake;
  fake.record_arrivals(true);
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_chunk_flush = 1000ms; });
  raw_client c(h->port, harness::token("room", "alice"));
  ASSERT_TRUE(eventually([&] { return fake.ws_connections() == 1; }));
  std::string sent;  // the audio so far
  std::vector<std::pair<std::size_t, std::chrono::steady_clock::time_point>>
      completed;  // (chunk end, when its last byte went)
  auto send = [&](const std::string& pcm, std::size_t frame) {
    for (std::size_t at = 0; at < pcm.size(); at += frame) {
      const auto piece = pcm.substr(at, frame);
      c.write(raw_client::frame(piece));
      const auto before = sent.size() / 3'200;
      sent += piece;
      if (sent.size() / 3'200 > before)
        completed.emplace_back(sent.size() / 3'200 * 3'200, std::chrono::steady_clock::now());
      std::this_thread::sleep_for(20ms);  // a real-time pace
    }
  };
  const auto reads_before = metric(*h, "net.socket_reads");
  send(audio(2 * 3'200, 67), 640);  // 10 frames, 2 chunks
  ASSERT_TRUE(eventually([&] { return fake.audio_bytes() == sent.size(); }, 500ms));
  const auto reads = metric(*h, "net.socket_reads") - reads_before;
  // One read a chunk (and one for the first frame alone), where each frame alone would take 10: the read takes the
  // whole chunk (edge_socket's read ahead), not Beast's 1 536 bytes and a frame's rest (3 reads a chunk).
  EXPECT_LE(reads, 3) << "10 frames in 2 chunks: the socket is read more than once a chunk";
  send(audio(5 * 3'200, 71), 1'000);  // frames that do not divide a chunk
  // A frame of 6 000 bytes cut after 3 300 of them: that part alone wakes the read (it is more than a chunk), which
  // completes no chunk; the rest of the frame completes two.
  const auto big = audio(6'000, 73);
  const auto f = raw_client::frame(big);
  c.write(f.substr(0, 8 + 3'300));
  std::this_thread::sleep_for(50ms);  // the first part is read meanwhile
  c.write(f.substr(8 + 3'300));
  sent += big;
  completed.emplace_back(sent.size() / 3'200 * 3'200, std::chrono::steady_clock::now());
  // (a chunk held too long goes with the pause watch's flush, tail included: its end is then no chunk's end)
  ASSERT_TRUE(eventually([&] { return fake.audio_bytes() >= sent.size() / 3'200 * 3'200; }, 5s));
  std::size_t matched = 0;
  for (const auto& a : fake.arrivals()) {
    auto it = std::find_if(completed.begin(), completed.end(), [&](const auto& c2) { return c2.first == a.end; });
    if (it == completed.end()) continue;  // the tail, which the pause watch sends a second later
    ++matched;
    EXPECT_LT(a.at - it->second, 400ms) << "the chunk ending at byte " << a.end << " waited for the pause watch";
  }
  EXPECT_EQ(matched, completed.size()) << "every chunk went alone, as it was completed";
  EXPECT_EQ(metric(*h, "net.held_audio_releases"), 0) << "no pause: nothing was released";
  EXPECT_TRUE(fake.audio() == sent.substr(0, fake.audio_bytes()));
}

// The server's close is not held: once it closes a client (here for a missed pong), the client's close frame is read
// at once, not behind a held chunk until the pause watch releases it (STT_CHUNK_FLUSH_MS of 3 s here: 3.75-4.5 s).
TEST(GladiaHold, AClientsCloseFrameIsNotHeldOnceTheServerCloses) {
  fake_gladia fake;
  auto h = gladia_harness(fake, [](sw::config& c) {
    c.stt_chunk_flush = 3000ms;
    c.ws_ping_interval = 100ms;
    c.ws_pong_timeout = 300ms;
  });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  const auto pcm = audio(6 * 640, 89);
  stream(*c, pcm.substr(0, 640));
  ASSERT_TRUE(eventually([&] { return metric(*h, "net.frames_in") >= 1; }));
  stream(*c, pcm.substr(640, 4 * 640));
  ASSERT_TRUE(eventually([&] { return fake.audio_bytes() == 3'200; }));
  stream(*c, pcm.substr(5 * 640));  // held; the test reads nothing now, so no pong goes
  ASSERT_TRUE(eventually([&] { return metric(*h, "ws.heartbeat_timeouts_total") == 1; }));
  const auto closing = std::chrono::steady_clock::now();
  EXPECT_EQ(expect_close(*c, 10'000), 4408);  // the handshake ends when the server has read our close frame
  EXPECT_LT(std::chrono::steady_clock::now() - closing, 2000ms) << "the close frame waited behind the held chunk";
}

// A chunk's last frame a little late is no pause: the pause watch gives a held connection a quarter interval more than
// the interval since its last read (quiet_watch). Every other chunk's last frame comes 12 ms late here, so the reads
// are 112 ms apart half the time; judged at the bare interval, a check of the watch (every 25 ms) would fall in that
// late 12 ms about one time in two and release the chunk early.
TEST(GladiaHold, AChunkWhoseLastFrameIsALittleLateIsNotReleased) {
  fake_gladia fake;
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_chunk_flush = 100ms; });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  const auto pcm = audio(40 * 3'200, 83);
  auto at = std::chrono::steady_clock::now();
  for (std::size_t k = 0; k < 200; ++k) {
    auto due = at + k * 20ms;
    if (k % 10 == 4) due += 12ms;  // the last frame of every other chunk (the first frame goes alone)
    std::this_thread::sleep_until(due);
    c->send_binary(pcm.data() + k * 640, 640);
  }
  ASSERT_TRUE(eventually([&] { return fake.audio_bytes() == 200 * 640; }, 5s));
  EXPECT_LE(metric(*h, "net.held_audio_releases"), 1) << "chunks released early (one tolerated: a scheduling hiccup)";
  EXPECT_TRUE(fake.audio() == pcm.substr(0, 200 * 640));
}

// What a streaming client sends beside its audio (a ping here) waits with a held chunk for at most the pause watch:
// when the audio pauses mid-chunk, the watch releases the chunk and what came with it. After the pause nothing is
// held: a ping alone is read at once.
TEST(GladiaHold, WhatCameWithAHeldChunkIsReadWhenTheAudioPauses) {
  fake_gladia fake;
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_chunk_flush = 100ms; });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  const auto pcm = audio(6 * 640, 79);
  stream(*c, pcm.substr(0, 640));
  ASSERT_TRUE(eventually([&] { return metric(*h, "net.frames_in") >= 1; }));
  stream(*c, pcm.substr(640, 4 * 640));  // the first chunk's last four frames
  ASSERT_TRUE(eventually([&] { return fake.audio_bytes() == 3'200; }));
  stream(*c, pcm.substr(5 * 640));  // a frame of the next chunk: held, with the ping after it
  c->send_text(R"({"type":"ping"})");
  expect_message(*c, "\"pong\"", 3000);
  EXPECT_GE(metric(*h, "net.held_audio_releases"), 1) << "the pause watch released it";
  ASSERT_TRUE(eventually([&] { return fake.audio_bytes() == pcm.size(); }, 3s)) << "the tail goes with the pause";
  EXPECT_TRUE(fake.audio() == pcm);
  const auto releases = metric(*h, "net.held_audio_releases");
  c->send_text(R"({"type":"ping"})");
  expect_message(*c, "\"pong\"", 3000);
  EXPECT_EQ(metric(*h, "net.held_audio_releases"), releases) << "nothing was held after the pause";
}

// One pause watch serves every connection: streams that pause mid-chunk each deliver their tail without a stop,
// and again after a second pause, while other streams close around them.
TEST(GladiaFlush, EveryPausedStreamDeliversItsTailAfterEachPause) {
  fake_gladia fake;
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_chunk_flush = 100ms; });
  std::vector<std::unique_ptr<ws_client>> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(h->connect("room" + std::to_string(i), "p" + std::to_string(i)));
    expect_message(*clients.back(), "ready");
  }
  const auto a = audio(1'400, 41), b = audio(1'400, 43), a2 = audio(1'400, 47), b2 = audio(1'400, 53);
  clients[0]->close();
  stream(*clients[1], a);
  stream(*clients[3], b);
  clients[2]->close();
  auto has = [&](const std::string& pcm) {
    for (auto& id : fake.session_ids())
      if (fake.audio(id) == pcm) return true;
    return false;
  };
  ASSERT_TRUE(eventually([&] { return has(a) && has(b); })) << "a paused stream's tail waits for nothing";
  stream(*clients[1], a2);
  stream(*clients[3], b2);
  ASSERT_TRUE(eventually([&] { return has(a + a2) && has(b + b2); })) << "the second pause is reported too";
}

// Overflow while the upstream is away drops the oldest whole chunks; those never reach Gladia, so they must not
// count as acknowledged: the acks after the reconnect still trim exactly what Gladia took. A second drop then
// replays only what Gladia has not acknowledged: no duplicate, nothing more lost.
void overflow_then_drop(bool ack_lost) {
  fake_gladia fake;
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_replay_buffer_bytes = 32'000; });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  // The fourth chunk: lost with the connection, or (ack_lost) taken by Gladia whose ack is lost.
  fake.cut_after(9'600, 0, ack_lost);
  auto first = audio(80'000, ack_lost ? 23 : 29);
  stream(*c, first, 640, 1ms);  // all of it arrives during the reconnect's 300 ms backoff: the buffer overflows
  expect_message(*c, "connecting", 5000);
  expect_message(*c, "ready", 5000);
  auto dropped = metric(*h, "gladia.dropped_bytes");
  ASSERT_GT(dropped, 3'200);
  const std::size_t taken_before = ack_lost ? 12'800 : 9'600;  // what Gladia has of the first connection
  auto expected = first.substr(0, taken_before) + first.substr(9'600 + static_cast<std::size_t>(dropped));
  ASSERT_TRUE(eventually([&] { return fake.audio_bytes() == expected.size(); }))
      << fake.audio_bytes() << " of " << expected.size();
  // Several chunks in flight and unacknowledged when the next drop comes.
  fake.delay_acks(15ms);
  fake.cut_after(expected.size() + 9'600);
  auto second = audio(32'000, 31);
  stream(*c, second, 640, 2ms);
  c->send_text(R"({"type":"stop"})");
  EXPECT_EQ(read_all(*c, 20s).close_code, 1000);
  expected += second;
  EXPECT_EQ(fake.audio().size(), expected.size());
  EXPECT_TRUE(fake.audio() == expected) << "audio lost, repeated or shifted";
  EXPECT_EQ(fake.ws_connections(), 3);
}

TEST(GladiaBuffer, OverflowWhileDisconnectedDoesNotCountAsAcknowledged) {
  overflow_then_drop(false);
}

TEST(GladiaBuffer, AChunkTakenWithItsAckLostAndThenDroppedKeepsAcksAligned) {
  overflow_then_drop(true);
}

// Every connection to the same CA setting shares one TLS context, made once.
TEST_F(GladiaTls, OneTlsContextServesEveryStream) {
  ASSERT_TRUE(pki->ok);
  fake_gladia fake(tls_options());
  auto out = std::make_shared<sw::net::outbound>();
  EXPECT_EQ(out->prepare_tls(pki->file("ca.pem")), "");
  for (int i = 0; i < 3; ++i) {
    std::promise<sw::net::http_outcome> done;
    sw::net::client_options o;
    o.ca_file = pki->file("ca.pem");
    out->fetch(fake.url() + "/v2/live", "POST", {{"x-gladia-key", "fake-gladia-key"}}, "{}", o,
               [&](sw::net::http_outcome r) { done.set_value(std::move(r)); });
    auto r = done.get_future().get();
    EXPECT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.status, 201u);
  }
  EXPECT_EQ(out->tls_contexts(), 1u);
  EXPECT_NE(out->prepare_tls("/nonexistent/ca.pem"), "");
  EXPECT_EQ(out->tls_contexts(), 1u) << "a failed setting is not kept";
}

}  // namespace

namespace {

// The room's stored transcript as another member reads it (GET /api/sessions/room/transcript).
std::string stored(const harness& h) {
  return sw::net::http_fetch(h.http("/api/sessions/room/transcript"), "GET", "",
                             {{"Authorization", "Bearer " + harness::token("room", "bob")}})
      .body;
}

}  // namespace

// Gladia made the final of utterance 0 from the chunk it took last on a connection that then dropped: the final
// was lost in flight. The relay knows a stretch of the stream went without finals (from the drop to the first final
// after it) and delivers the utterance that post_transcript lists there, once, to the room and the database.
TEST(GladiaRecovery, AFinalLostWithItsConnectionComesFromPostTranscript) {
  fake_gladia fake;
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  fake.cut_after(28'801, 0, true);  // the tenth chunk ends utterance 0: taken, its final lost with the connection
  stream(*c, audio(80'000), 640, 1ms);
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c, 15s);
  EXPECT_EQ(log.close_code, 1000);
  EXPECT_GE(fake.ws_connections(), 2);
  auto heard = texts(log);
  ASSERT_EQ(heard.size(), 3u) << ::testing::PrintToString(heard);
  EXPECT_EQ(heard[0], "utterance 1");
  EXPECT_EQ(heard[1], "utterance 2");
  EXPECT_EQ(heard[2], "utterance 0") << "recovered, after the others";
  EXPECT_EQ(field(log.finals[2], "speaker"), "alice");
  EXPECT_EQ(field(log.finals[2], "start"), "0.0");
  EXPECT_EQ(field(log.finals[2], "end"), "1.0");
  EXPECT_EQ(sw::test::metric(*h, "gladia.recovered_finals"), 1);
  EXPECT_EQ(fake.result_requests(), 0) << "post_transcript had it: no GET";
  EXPECT_TRUE(eventually([&] { return stored(*h).find("utterance 0") != std::string::npos; })) << stored(*h);
}

// Gladia takes stop_recording and ends the session, but nothing of the end arrives (the socket stays open and
// silent): after STT_DRAIN_TIMEOUT_MS the relay asks GET /v2/live/{id}, again while it says "processing", and
// delivers the last final from the result before "stopped".
TEST(GladiaRecovery, AnEndThatNeverArrivesIsFetchedFromTheSessionsResult) {
  fake_gladia fake;
  fake.hang_after_stop(true, 2);
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_drain_timeout = 1500ms; });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  stream(*c, audio(48'000));  // 1.5 s: a final at 1 s, the last one only after stop_recording
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c, 15s);
  EXPECT_EQ(log.close_code, 1000);
  EXPECT_EQ(texts(log), (std::vector<std::string>{"utterance 0", "utterance 1"}));
  ASSERT_FALSE(log.statuses.empty());
  EXPECT_EQ(log.statuses.back(), "stopped");
  EXPECT_EQ(fake.result_requests(), 3) << "two 'processing' answers, then 'done'";
  EXPECT_EQ(sw::test::metric(*h, "gladia.recovered_finals"), 1);
  EXPECT_TRUE(eventually([&] { return stored(*h).find("utterance 1") != std::string::npos; })) << stored(*h);
}

// Gladia goes away (1001) right after stop_recording, none of the session's end sent: the stream is over all the same
// (no new session for it), and its last final comes from the session's result.
TEST(GladiaRecovery, GoingAwayAfterStopEndsTheStreamWithTheFinalsFromTheResult) {
  fake_gladia fake;
  fake.close_after_stop(1001);
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  stream(*c, audio(48'000));  // a final at 1 s, the last one only after stop_recording
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c, 15s);
  EXPECT_EQ(log.close_code, 1000);
  EXPECT_TRUE(log.errors.empty()) << ::testing::PrintToString(log.errors);
  EXPECT_EQ(texts(log), (std::vector<std::string>{"utterance 0", "utterance 1"}));
  EXPECT_EQ(fake.init_requests(), 1);
  EXPECT_EQ(fake.result_requests(), 1);
}

// A result that is not ready within the bound: the stream ends all the same (bounded), with an error line.
TEST(GladiaRecovery, AResultNeverReadyEndsTheStreamWithinTheBoundAndSaysSo) {
  fake_gladia fake;
  fake.hang_after_stop(true, 1'000'000);
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_drain_timeout = 1000ms; });
  auto lines = sw::test::capture_log(*h);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  stream(*c, audio(48'000));
  c->send_text(R"({"type":"stop"})");
  const auto stopped_at = std::chrono::steady_clock::now();
  auto log = read_all(*c, 15s);
  EXPECT_EQ(log.close_code, 1000);
  EXPECT_LT(std::chrono::steady_clock::now() - stopped_at, 6s) << "the drain bound, then the fetch's";
  EXPECT_EQ(texts(log), (std::vector<std::string>{"utterance 0"}));
  EXPECT_GE(fake.result_requests(), 2);
  EXPECT_EQ(sw::test::metric(*h, "gladia.recovery_failures"), 1);
  EXPECT_NE(lines->all().find("could not be recovered: GET /v2/live/fake-1 gave status processing until "
                              "STT_DRAIN_TIMEOUT_MS ran out"),
            std::string::npos)
      << lines->all();
}

namespace {

struct heard_final {
  std::string id, text, start, end;
};

// The finals as (utterance id, text, start, end), in the stream's order (by start).
std::vector<heard_final> by_start(const transcript_log& log) {
  std::vector<heard_final> v;
  for (auto& f : log.finals)
    v.push_back({field(f, "utteranceId"), field(f, "text"), field(f, "start"), field(f, "end")});
  std::stable_sort(v.begin(), v.end(),
                   [](const heard_final& a, const heard_final& b) { return std::stod(a.start) < std::stod(b.start); });
  return v;
}

// The finals as "text start-end id", for a failure's message.
std::string described(const std::vector<heard_final>& finals) {
  std::vector<std::string> v;
  for (auto& f : finals) v.push_back(f.text + " " + f.start + "-" + f.end + " " + f.id);
  return ::testing::PrintToString(v);
}

// A 4 s stream whose first Gladia session went at 1.5 s, the rest in a second one (the fake makes a final a second of
// a session's audio, and its last at its end): five finals in the stream's order and times, the second session's
// with "-s2-" in their ids, every id its own.
void expect_finals_of_two_sessions(const std::vector<heard_final>& finals) {
  ASSERT_EQ(finals.size(), 5u) << described(finals);
  const std::vector<std::array<const char*, 3>> want = {{"utterance 0", "0.0", "1.0"},
                                                        {"utterance 1", "1.0", "1.5"},  // at the first one's end
                                                        {"utterance 0", "1.5", "2.5"},  // the new session's
                                                        {"utterance 1", "2.5", "3.5"},
                                                        {"utterance 2", "3.5", "4.0"}};
  std::set<std::string> ids;
  for (std::size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(finals[i].text, want[i][0]);
    EXPECT_EQ(finals[i].start, want[i][1]);
    EXPECT_EQ(finals[i].end, want[i][2]);
    ids.insert(finals[i].id);
    EXPECT_EQ(finals[i].id.find("-s2-") != std::string::npos, i >= 2) << finals[i].id;
  }
  EXPECT_EQ(ids.size(), 5u) << "every final has an id of its own";
}

// The client stops: the stream ends cleanly, in two Gladia sessions (the second stopped), which together took exactly
// `pcm` when that is given. What the client heard.
transcript_log stop_in_two_sessions(const fake_gladia& fake, ws_client& c, const std::string& pcm = {}) {
  c.send_text(R"({"type":"stop"})");
  auto log = read_all(c, 30s);
  EXPECT_EQ(log.close_code, 1000);
  EXPECT_TRUE(log.errors.empty()) << ::testing::PrintToString(log.errors);
  EXPECT_EQ(fake.session_ids(), (std::vector<std::string>{"fake-1", "fake-2"}));
  EXPECT_TRUE(fake.stopped("fake-2"));
  if (!pcm.empty()) {
    EXPECT_EQ(fake.audio("fake-1") + fake.audio("fake-2"), pcm);
  }
  return log;
}

// Once the relay has made `reconnects` tries (a lost session's retries under way: the stop then goes to the new
// session, with a drain bound of its own), the client stops; the stream ends cleanly, in two Gladia sessions. Its
// finals, by start.
std::vector<heard_final> stop_once_retrying(const harness& h, ws_client& c, const fake_gladia& fake,
                                            long long reconnects) {
  EXPECT_TRUE(eventually([&] { return sw::test::metric(h, "gladia.reconnects") >= reconnects; }, 10s));
  return by_start(stop_in_two_sessions(fake, c));
}

// The room's stored finals of the stream whose final has utterance id `one_id` ("<stream key>-<upstream id>").
std::size_t stored_finals(const harness& h, const std::string& one_id) {
  const auto s = stored(h);
  const auto what = "\"utteranceId\":\"" + one_id.substr(0, one_id.find('-') + 1);
  std::size_t n = 0;
  for (auto at = s.find(what); at != std::string::npos; at = s.find(what, at + what.size())) ++n;
  return n;
}

}  // namespace

// Gladia ends a session itself mid-stream (close 1000: a live session lasts at most 3 hours). The stream goes on in
// a new session, the audio the old one did not acknowledge first: nothing lost, nothing repeated. The new session's
// times start again from 0 and its utterance ids repeat the old one's: the relay moves the times to the stream's and
// prefixes the ids, so the room and the database get five distinct finals in order, not two overwritten ones.
TEST(GladiaSessionEnd, AStreamGoesOnInANewSessionWhenGladiaEndsOne) {
  fake_gladia fake;
  fake.end_session_after(48'000);  // 1.5 s
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  auto pcm = audio(128'000, 5);  // 4 s
  stream(*c, pcm, 640, 1ms);
  auto log = stop_in_two_sessions(fake, *c, pcm);
  EXPECT_EQ(fake.audio_bytes("fake-1"), 48'000u);
  EXPECT_EQ(std::count(log.statuses.begin(), log.statuses.end(), "connecting"), 1) << "again for the new session";
  auto finals = by_start(log);
  expect_finals_of_two_sessions(finals);
  if (HasFatalFailure()) return;
  EXPECT_EQ(sw::test::metric(*h, "gladia.sessions_renewed"), 1);
  EXPECT_LE(sw::test::metric(*h, "gladia.result_fetches"), 0) << "post_transcript said every final had come";
  EXPECT_TRUE(eventually([&] { return stored_finals(*h, finals[0].id) == 5; })) << stored(*h);
}

// The same end without its results (the connection closes 1000 before the last final is sent): that final is fetched
// from the ended session's result at once, while the stream goes on in the new session.
TEST(GladiaSessionEnd, AFinalLostWithTheSessionsEndComesFromItsResult) {
  fake_gladia fake;
  fake.end_session_after(48'000, 1, false);
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  auto pcm = audio(128'000, 6);
  stream(*c, pcm, 640, 1ms);
  // Recovered before the stream ends, not with its end.
  transcript_log log;
  std::string recovered;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (recovered.empty() && std::chrono::steady_clock::now() < deadline) {
    auto m = c->read(1s);
    if (m.kind == ws_client::message::text && field(m.data, "type") == "transcript_final") {
      log.finals.push_back(m.data);
      if (field(m.data, "utteranceId").find("recovered-") != std::string::npos) recovered = m.data;
    }
  }
  ASSERT_FALSE(recovered.empty());
  EXPECT_EQ(field(recovered, "utteranceId").find("s2-"), std::string::npos) << "the first session's";
  c->send_text(R"({"type":"stop"})");
  auto rest = read_all(*c, 15s);
  EXPECT_EQ(rest.close_code, 1000);
  EXPECT_TRUE(rest.errors.empty());
  log.finals.insert(log.finals.end(), rest.finals.begin(), rest.finals.end());
  EXPECT_EQ(fake.audio("fake-1") + fake.audio("fake-2"), pcm);
  auto finals = by_start(log);
  expect_finals_of_two_sessions(finals);
  if (HasFatalFailure()) return;
  EXPECT_NE(finals[1].id.find("recovered-1"), std::string::npos) << finals[1].id;
  EXPECT_EQ(sw::test::metric(*h, "gladia.recovered_finals"), 1);
  EXPECT_EQ(fake.result_requests("fake-1"), 1);
  EXPECT_EQ(fake.result_requests("fake-2"), 0);
  EXPECT_TRUE(eventually([&] { return stored_finals(*h, finals[0].id) == 5; })) << stored(*h);
}

// The session's limit comes with the stream's last audio, after which the relay sent stop_recording at once: Gladia
// ends the session (1000) without taking that audio or reading the stop. That is no end of the stream: the audio it
// did not take goes to a new session, with the stop, and its final comes too.
// 1.6 s sent at once with the stop, the session's limit at 1.5 s: the stream ends cleanly in two sessions, which
// together took exactly the audio sent, the second stopped. Its finals, by start.
std::vector<heard_final> limit_with_the_last_audio(const fake_gladia& fake, ws_client& c) {
  auto pcm = audio(51'200, 9);  // 1.6 s: the last 0.1 s past the limit
  stream(c, pcm);               // sent at once, with the stop: all of it goes up with stop_recording behind it
  return by_start(stop_in_two_sessions(fake, c, pcm));
}

TEST(GladiaSessionEnd, ALimitThatCameWithTheLastAudioBeforeTheStopStillGetsItTranscribed) {
  fake_gladia fake;
  fake.end_session_after(48'000);
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  auto finals = limit_with_the_last_audio(fake, *c);
  ASSERT_EQ(finals.size(), 3u) << described(finals);
  EXPECT_EQ(finals[2].text, "utterance 0");
  EXPECT_EQ(finals[2].start, "1.5");
  EXPECT_EQ(finals[2].end, "1.6");
}

// The same end after the stop, with the new session slow to come (its init answered 503 "retry after 6 s"): the first
// session's drain bound (5 s here) runs out meanwhile. It is that session's, not the stream's: the new one gets a
// bound of its own, and the last 0.1 s still gets its final.
TEST(GladiaSessionEnd, ANewSessionAfterTheStopHasADrainBoundOfItsOwn) {
  fake_gladia fake;
  fake.end_session_after(48'000);
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  fake.fail_inits(1, 503, "6");  // the next init: the new session's
  auto finals = limit_with_the_last_audio(fake, *c);
  ASSERT_EQ(finals.size(), 3u) << described(finals);
  EXPECT_EQ(finals[2].start, "1.5");
  EXPECT_EQ(finals[2].end, "1.6");
  EXPECT_LE(sw::test::metric(*h, "gladia.drain_timeouts"), 0);
}

// Gladia acknowledged stop_recording but none of the audio (acknowledgments of audio are off or lost): it has read the
// audio all the same (the stop came after it), so its end is the stream's end, not a reason for a new session.
TEST(GladiaSessionEnd, AnEndAfterTheStopWasAcknowledgedEndsTheStreamThoughNoAudioWas) {
  fake_gladia fake;
  fake.withhold_acks(true);
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  stream(*c, audio(48'000, 4));
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c, 15s);
  EXPECT_EQ(log.close_code, 1000);
  EXPECT_TRUE(log.errors.empty()) << ::testing::PrintToString(log.errors);
  EXPECT_EQ(texts(log), (std::vector<std::string>{"utterance 0", "utterance 1"}));
  EXPECT_EQ(fake.init_requests(), 1);
  EXPECT_LE(sw::test::metric(*h, "gladia.sessions_renewed"), 0);
}

// A Gladia that ends every session within a minute of audio is not asked for new ones forever: after five in a row
// (the later ones after the init's backoff) the stream's transcription fails for good, as the client is told.
TEST(GladiaSessionEnd, SessionsEndedOneAfterAnotherEndInStttUnavailable) {
  fake_gladia fake;
  fake.end_session_after(6'400, 1000);
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  const auto began = std::chrono::steady_clock::now();
  stream(*c, audio(64'000), 640, 1ms);
  auto e = expect_message(*c, "\"error\"", 15000);
  EXPECT_EQ(field(e, "code"), "stt_unavailable");
  EXPECT_NE(field(e, "message").find("Gladia ended or lost 5 sessions in a row"), std::string::npos) << e;
  // The third, fourth and fifth sessions were asked for after 0.3, 0.6 and 1.2 s (a lower bound: no timing race).
  EXPECT_GE(std::chrono::steady_clock::now() - began, 2100ms);
  expect_message(*c, "stopped");
  EXPECT_EQ(fake.init_requests(), 5);
  EXPECT_EQ(sw::test::metric(*h, "gladia.sessions_renewed"), 4);
  EXPECT_TRUE(c->is_open());
}

// A session that got audio twice (taken before a drop that lost its ack, then replayed) counts its times that much
// ahead of the stream. When it is lost, the final lost with it lies past the stream's position of its acknowledged
// audio, but within its own count of it: it is recovered all the same.
TEST(GladiaSessionLost, AFinalLostWithASessionThatGotAudioTwiceIsRecovered) {
  fake_gladia fake;
  fake.cut_after(9'600, 0, true);   // the fourth chunk taken, its ack lost with the connection: it is sent again
  fake.lose_session_after(35'200);  // the session's eleven chunks (the stream's ten) taken; lost with the twelfth
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  auto pcm = audio(64'000, 3);  // 2 s
  stream(*c, pcm, 640, 1ms);
  auto finals = stop_once_retrying(*h, *c, fake, 2);  // the cut's reconnect, then the loss's first
  EXPECT_EQ(fake.audio_bytes("fake-1"), 35'200u);
  ASSERT_EQ(finals.size(), 3u) << described(finals);
  EXPECT_EQ(finals[1].text, "utterance 1");  // the lost session's last, 1.0-1.1 s by its count (1.0 s of the stream)
  EXPECT_NE(finals[1].id.find("recovered-1"), std::string::npos) << finals[1].id;
  EXPECT_NE(finals[2].id.find("-s2-"), std::string::npos) << finals[2].id;
  EXPECT_EQ(sw::test::metric(*h, "gladia.recovered_finals"), 1);
}

// Gladia read the frame its session was lost with (the acknowledgment went with the connection): the session's last
// utterance, 1.0-1.2 s, runs past the audio the relay saw acknowledged (1.1 s). The new session gets the stream from
// 1.1 s, so the part from 1.0 s would be nobody's: the lost session's utterance is delivered, though its middle lies at
// the acknowledged end.
TEST(GladiaSessionLost, AnUtteranceBegunBeforeTheLastAcknowledgedAudioIsRecovered) {
  fake_gladia fake;
  fake.lose_session_after(35'200, 1, true);  // eleven chunks acknowledged; the twelfth taken, then the session lost
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  auto pcm = audio(64'000, 5);  // 2 s
  stream(*c, pcm, 640, 1ms);
  auto finals = stop_once_retrying(*h, *c, fake, 1);
  EXPECT_EQ(fake.audio_bytes("fake-1"), 38'400u);
  ASSERT_EQ(finals.size(), 3u) << described(finals);
  EXPECT_EQ(finals[1].start, "1.0");
  EXPECT_EQ(finals[1].end, "1.2");
  EXPECT_NE(finals[1].id.find("recovered-1"), std::string::npos) << finals[1].id;
  EXPECT_EQ(finals[2].start, "1.1") << "the new session's, from the acknowledged end";
  EXPECT_NE(finals[2].id.find("-s2-"), std::string::npos) << finals[2].id;
}

// The host that ran the session went away after the stop, before it took the last 0.5 s (it read them, took nothing,
// and the connection dropped at the stop). The reconnects to its url (about 6 s) outlast the drain bound (1 s here):
// the bound waits for them, once, and the audio Gladia never had goes to a new session, with the stop. Ending at the
// bound would leave it untranscribed.
TEST(GladiaSessionLost, ASessionLostAfterTheStopLeavesItsUntakenAudioToANewOne) {
  fake_gladia fake;
  fake.lose_session_at_stop_after(48'000);  // 1.5 s taken; the rest read, not taken
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_drain_timeout = 1000ms; });
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  auto pcm = audio(64'000, 11);  // 2 s
  stream(*c, pcm, 640, 1ms);
  auto finals = by_start(stop_in_two_sessions(fake, *c, pcm));
  ASSERT_EQ(finals.size(), 3u) << described(finals);
  EXPECT_EQ(finals[1].start, "1.0");  // the lost session's last, made final into its result only
  EXPECT_EQ(finals[1].end, "1.5");
  EXPECT_NE(finals[1].id.find("recovered-1"), std::string::npos) << finals[1].id;
  EXPECT_EQ(finals[2].start, "1.5");
  EXPECT_EQ(finals[2].end, "2.0");
  EXPECT_NE(finals[2].id.find("-s2-"), std::string::npos) << finals[2].id;
  EXPECT_EQ(sw::test::metric(*h, "gladia.sessions_lost"), 1);
  EXPECT_EQ(sw::test::metric(*h, "gladia.drain_extended"), 1);
  EXPECT_LE(sw::test::metric(*h, "gladia.drain_timeouts"), 0);
}

// Every connection to the session drops at the stop, and its url refuses connections for 1.5 s after each drop: the
// drain bound (1 s) runs out while the relay is reconnecting, each time. It waits for the reconnects once; the second
// time the stream ends there, from the session's result (the audio the session never took goes untranscribed). Waiting
// each time would never end: every reconnect gets through, and drops at its stop.
TEST(GladiaSessionLost, TheDrainBoundWaitsForReconnectsOnceASession) {
  fake_gladia fake;
  fake.drop_every_stop_after(48'000, 1500ms);  // 1.5 s taken; the rest read, not taken
  auto h = gladia_harness(fake, [](sw::config& c) { c.stt_drain_timeout = 1000ms; });
  auto lines = sw::test::capture_log(*h);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  stream(*c, audio(64'000, 11), 640, 1ms);  // 2 s
  c->send_text(R"({"type":"stop"})");
  auto log = read_all(*c, 20s);
  EXPECT_EQ(log.close_code, 1000);
  auto finals = by_start(log);
  ASSERT_EQ(finals.size(), 2u) << described(finals);
  EXPECT_EQ(finals[1].start, "1.0");  // the session's last, made final into its result only
  EXPECT_EQ(finals[1].end, "1.5");
  EXPECT_NE(finals[1].id.find("recovered-1"), std::string::npos) << finals[1].id;
  EXPECT_EQ(fake.session_ids(), std::vector<std::string>{"fake-1"});
  EXPECT_GE(fake.ws_connections(), 2) << "the first, and the reconnect that got through after the first bound";
  EXPECT_EQ(sw::test::metric(*h, "gladia.drain_extended"), 1);
  EXPECT_EQ(sw::test::metric(*h, "gladia.drain_timeouts"), 1);
  EXPECT_EQ(sw::test::metric(*h, "gladia.unacknowledged_end_bytes"), 16'000) << "the last 0.5 s";
  EXPECT_NE(lines->all().find("its last 500 ms of audio were never acknowledged"), std::string::npos) << lines->all();
}

// The host that ran a stream's Gladia session went away: the connection drops and no reconnect to the session's url
// gets through. After its retries the stream goes on in a new session, the audio the lost one did not acknowledge
// first. The final lost with the connection comes from the lost session's result; the client sees no error.
TEST(GladiaSessionLost, AStreamWhoseSessionCannotBeReachedAgainGoesOnInANewOne) {
  fake_gladia fake;
  fake.lose_session_after(48'000);  // 1.5 s
  auto h = gladia_harness(fake);
  auto c = h->connect("room", "alice");
  expect_message(*c, "ready");
  auto pcm = audio(128'000, 7);  // 4 s
  stream(*c, pcm, 640, 1ms);
  auto log = stop_in_two_sessions(fake, *c, pcm);  // five reconnects first: 0.3 + 0.6 + 1.2 + 2 + 2 s of backoff
  EXPECT_EQ(fake.audio_bytes("fake-1"), 48'000u);
  EXPECT_EQ(std::count(log.statuses.begin(), log.statuses.end(), "connecting"), 1) << "through the retries";
  auto finals = by_start(log);
  expect_finals_of_two_sessions(finals);
  if (HasFatalFailure()) return;
  EXPECT_NE(finals[1].id.find("recovered-1"), std::string::npos) << finals[1].id;
  EXPECT_EQ(sw::test::metric(*h, "gladia.reconnects"), 5);
  EXPECT_EQ(sw::test::metric(*h, "gladia.sessions_lost"), 1);
  EXPECT_LE(sw::test::metric(*h, "gladia.sessions_renewed"), 0);
  EXPECT_EQ(fake.result_requests("fake-1"), 1);
  EXPECT_EQ(fake.result_requests("fake-2"), 0);
  EXPECT_TRUE(eventually([&] { return stored_finals(*h, finals[0].id) == 5; })) << stored(*h);
}
