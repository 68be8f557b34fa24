// A client that stops reading is closed 4409 once its bounded queue is full, while the other clients of
// the room get everything.
#include <thread>

#include <gtest/gtest.h>

#include "tests/support/harness.hpp"

namespace {

using sw::net::ws_client;
using sw::test::expect_message;
using sw::test::field;
using sw::test::harness;
using namespace std::chrono_literals;

// A client of "room" whose socket takes in little (4 KiB) while it does not read.
std::unique_ptr<ws_client> connect_slow_reader(const harness& h) {
  sw::net::client_options small;
  small.receive_buffer = 4096;
  return ws_client::connect(h.ws(harness::token("room", "slow")), small);
}

TEST(SlowClient, IsClosed4409AndOthersAreUnaffected) {
  sw::test::echo_options o;
  o.padding = 4000;  // ~4 KB per final
  harness h(
      [](sw::config& c) {
        c.client_send_queue_bytes = 64 * 1024;
        c.socket_send_buffer = 4096;  // no kernel autotuning: the queue, not the kernel, absorbs the backlog
      },
      sw::test::echo_provider(o));
  auto slow = connect_slow_reader(h);
  auto fast = h.connect("room", "fast");
  auto speaker = h.connect("room", "speaker");
  expect_message(*slow, "ready");
  expect_message(*fast, "ready");
  expect_message(*speaker, "ready");

  constexpr int frames = 300;  // ~1.2 MB of finals: more than the socket buffers plus the queue
  // Lockstep: each frame's final reaches the speaker and the fast client before the next frame goes out,
  // so only the client that stopped reading builds up a backlog.
  auto next_final = [](ws_client& c) {
    for (;;) {
      auto m = c.read(5s);
      if (m.kind != ws_client::message::text) return false;
      if (field(m.data, "type") == "transcript_final") return true;
    }
  };
  int speaker_finals = 0, fast_finals = 0;
  std::vector<std::uint8_t> frame(2, 0);
  for (int i = 0; i < frames; ++i) {
    speaker->send_binary(frame.data(), frame.size());
    speaker_finals += next_final(*speaker);
    fast_finals += next_final(*fast);
  }
  EXPECT_EQ(speaker_finals, frames);
  EXPECT_EQ(fast_finals, frames);
  EXPECT_TRUE(fast->is_open());

  // the slow client, reading at last, finds its stream closed 4409 "Client too slow"
  std::string reason;
  EXPECT_EQ(sw::test::expect_close(*slow, 10000, &reason), 4409);
  EXPECT_EQ(reason, "Client too slow");
  auto m = sw::net::http_fetch(h.http("/metrics"));
  EXPECT_NE(field(m.body, "counters").find("\"ws.slow_client_closes\":1"), std::string::npos) << m.body;
}

// A client that stops reading while a large message is on its way: that write stays stuck in the full socket
// buffer, and a close frame queued behind it would never leave. The server gives up on the client (4409, then
// drops the TCP connection when the close handshake goes unanswered) while the client still reads nothing, and
// yet the client, reading at last, finds the 4409 close frame behind its data, not a bare end of stream: the send
// buffer is widened for it (net/server.cpp, make_room_to_close).
TEST(SlowClient, ReadingOnlyAfterTheServerGaveUpStillFinds4409) {
  sw::test::echo_options o;
  o.padding = 40'000;  // ~40 KB per final: one is far more than the socket buffers take
  harness h(
      [](sw::config& c) {
        // The slow client's third final overflows the queue (the first stays in flight: more than the socket
        // buffers take). Not the second: the speaker gets 40 KB finals too, and its last one can still count while
        // the next is queued (its write's completion is not yet handled when the speaker has read it and sent the
        // next frame), which a 64 KiB queue once took for a slow speaker (closed 4409 under a loaded CTest run).
        c.client_send_queue_bytes = 96 * 1024;
        c.socket_send_buffer = 4096;
        c.ws_close_timeout = 200ms;
      },
      sw::test::echo_provider(o));
  auto slow = connect_slow_reader(h);
  auto speaker = h.connect("room", "speaker");
  expect_message(*slow, "ready");
  expect_message(*speaker, "ready");
  std::vector<std::uint8_t> frame(2, 0);
  for (int i = 0; i < 3; ++i) {
    speaker->send_binary(frame.data(), frame.size());
    expect_message(*speaker, "transcript_final");
  }
  // the server has closed 4409 and, the close handshake unanswered, dropped the slow client's connection: only
  // the speaker's (and the metrics request's own) remain
  ASSERT_TRUE(sw::test::eventually([&] { return sw::test::metric(h, "ws.slow_client_closes") == 1; }));
  ASSERT_TRUE(sw::test::eventually([&] { return sw::test::metric(h, "net.open_connections") == 2; }));
  std::string reason;
  EXPECT_EQ(sw::test::expect_close(*slow, 10000, &reason), 4409);
  EXPECT_EQ(reason, "Client too slow");
}

TEST(SlowClient, PartialsAreSkippedAboveHalfQueueButFinalsAreNot) {
  harness h([](sw::config& c) {
    c.client_send_queue_bytes = 64 * 1024;
    c.socket_send_buffer = 4096;
  });
  auto slow = connect_slow_reader(h);
  auto speaker = h.connect("room", "speaker");
  expect_message(*slow, "ready");
  expect_message(*speaker, "ready");
  std::vector<std::uint8_t> frame(2, 0);
  constexpr int frames = 150;  // ~37 KB of finals (fit the queue) + ~37 KB of partials (do not)
  for (int i = 0; i < frames; ++i) {
    speaker->send_binary(frame.data(), frame.size());
    for (;;) {  // lockstep on the speaker's own final
      auto m = speaker->read(5s);
      ASSERT_EQ(m.kind, ws_client::message::text);
      if (field(m.data, "type") == "transcript_final") break;
    }
  }
  // Every frame's partial comes before its final: the last final is the last message for this client.
  int partials = 0, finals = 0;
  while (finals < frames) {
    auto m = slow->read(10s);
    if (m.kind != ws_client::message::text) break;
    auto type = field(m.data, "type");
    partials += type == "transcript_partial";
    finals += type == "transcript_final";
  }
  EXPECT_EQ(finals, frames) << "finals must never be skipped while the queue has room";
  EXPECT_LT(partials, frames);
  auto m = sw::net::http_fetch(h.http("/metrics"));
  EXPECT_GT(std::stoll(field(field(m.body, "counters"), "ws.partials_skipped")), 0) << m.body;
}

}  // namespace
