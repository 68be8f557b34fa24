// A client that stops reading is closed 4409 once its bounded queue is full, while the other clients of
// the room get everything.
#include <atomic>
#include <thread>

#include <gtest/gtest.h>

#include "tests/support/harness.hpp"

namespace {

using sw::net::ws_client;
using sw::test::expect_message;
using sw::test::field;
using sw::test::harness;
using namespace std::chrono_literals;

TEST(SlowClient, IsClosed4409AndOthersAreUnaffected) {
  sw::test::echo_options o;
  o.padding = 4000;  // ~4 KB per final
  harness h(
    [](sw::config& c) {
      c.client_send_queue_bytes = 64 * 1024;
      c.socket_send_buffer = 4096;  // no kernel autotuning: the queue, not the kernel, absorbs the backlog
    },
    sw::test::echo_provider(o));
  sw::net::client_options small;
  small.receive_buffer = 4096;
  auto slow = ws_client::connect(h.ws(harness::token("room", "slow")), small);
  auto fast = h.connect("room", "fast");
  auto speaker = h.connect("room", "speaker");
  expect_message(*slow, "ready");
  expect_message(*fast, "ready");
  expect_message(*speaker, "ready");

  constexpr int frames = 300;  // ~1.2 MB of finals: more than the socket buffers plus the queue
  std::atomic<int> fast_finals{0};
  std::thread fast_reader([&] {
    while (fast_finals < frames) {
      auto m = fast->read(5s);
      if (m.kind != ws_client::message::text) break;
      if (field(m.data, "type") == "transcript_final") ++fast_finals;
    }
  });
  int speaker_finals = 0;
  std::vector<std::uint8_t> frame(2, 0);
  for (int i = 0; i < frames; ++i) {
    speaker->send_binary(frame.data(), frame.size());
    for (;;) {  // the speaker reads its own transcripts as they come
      auto m = speaker->read(0ms);
      if (m.kind != ws_client::message::text) break;
      if (field(m.data, "type") == "transcript_final") ++speaker_finals;
    }
  }
  while (speaker_finals < frames) {
    auto m = speaker->read(5s);
    ASSERT_EQ(m.kind, ws_client::message::text) << "speaker stopped receiving at " << speaker_finals;
    if (field(m.data, "type") == "transcript_final") ++speaker_finals;
  }
  fast_reader.join();
  EXPECT_EQ(fast_finals.load(), frames);
  EXPECT_TRUE(fast->is_open());

  // the slow client, reading at last, finds its stream closed 4409 "Client too slow"
  std::string reason;
  EXPECT_EQ(sw::test::expect_close(*slow, 10000, &reason), 4409);
  EXPECT_EQ(reason, "Client too slow");
  auto m = sw::net::http_fetch(h.http("/metrics"));
  EXPECT_NE(field(m.body, "counters").find("\"ws.slow_client_closes\":1"), std::string::npos) << m.body;
}

TEST(SlowClient, PartialsAreSkippedAboveHalfQueueButFinalsAreNot) {
  harness h([](sw::config& c) {
    c.client_send_queue_bytes = 64 * 1024;
    c.socket_send_buffer = 4096;
  });
  sw::net::client_options small;
  small.receive_buffer = 4096;
  auto slow = ws_client::connect(h.ws(harness::token("room", "slow")), small);
  auto speaker = h.connect("room", "speaker");
  expect_message(*slow, "ready");
  expect_message(*speaker, "ready");
  std::vector<std::uint8_t> frame(2, 0);
  constexpr int frames = 200;  // ~48 KB of finals (fits the queue) + ~48 KB of partials (do not)
  for (int i = 0; i < frames; ++i) {
    speaker->send_binary(frame.data(), frame.size());
    while (speaker->read(0ms).kind == ws_client::message::text) {
    }
  }
  std::this_thread::sleep_for(300ms);
  int partials = 0, finals = 0;
  for (;;) {
    auto m = slow->read(1s);
    if (m.kind != ws_client::message::text) break;
    auto type = field(m.data, "type");
    partials += type == "transcript_partial";
    finals += type == "transcript_final";
  }
  EXPECT_EQ(finals, frames) << "finals must never be skipped while the queue has room";
  EXPECT_LT(partials, frames);
  auto m = sw::net::http_fetch(h.http("/metrics"));
  EXPECT_EQ(field(m.body, "counters").find("\"ws.partials_skipped\":0"), std::string::npos) << m.body;
}

}  // namespace
