// A server that cannot keep up with the audio it is sent sheds its newest streams (1013) and keeps the rest, instead of
// falling ever further behind until the heartbeat ends every stream at once.
#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <caf/event_based_actor.hpp>

#include "tests/support/harness.hpp"

namespace {

using sw::net::ws_client;
using sw::test::expect_close;
using sw::test::expect_message;
using sw::test::harness;
using namespace std::chrono_literals;

// Sends 20 ms frames of silence in real time from a thread of its own until stopped (or the socket fails).
struct realtime_sender {
  explicit realtime_sender(ws_client& c)
      : thread([this, &c] {
          const std::string frame(640, '\0');
          auto next = std::chrono::steady_clock::now();
          try {
            while (!stop.load()) {
              c.send_binary(frame.data(), frame.size());
              next += 20ms;
              std::this_thread::sleep_until(next);
            }
          } catch (const std::exception&) {
            // closed by the server: the sending ends
          }
        }) {}
  ~realtime_sender() { halt(); }
  void halt() {
    stop = true;
    if (thread.joinable()) thread.join();
  }
  std::atomic<bool> stop{false};
  std::thread thread;
};

std::uint64_t counter(const harness& h, const std::string& name) {
  auto snap = h.svc->context().metrics->read();
  auto it = snap.counters.find(name);
  return it == snap.counters.end() ? 0 : it->second;
}

// Two actors of the service's own system (so on its only I/O thread) that take turns holding that thread for 500 ms,
// until `done` holds (then `ended`) or the returned guard goes (a failed assertion must not leave the thread held, nor
// `done` called on what the test has freed). Between two turns the thread runs one round of everything else that is
// ready: one read of each client socket (at most 8 KiB, a quarter of a second of audio), the timers, the actors'
// messages. So the server reads about half of what the clients send, as a server whose core is saturated would.
[[nodiscard]] std::shared_ptr<void> hog_until(caf::actor_system& sys, std::function<bool()> done,
                                              std::shared_ptr<std::atomic<bool>> ended,
                                              std::chrono::milliseconds hog_turn = 500ms) {
  auto give_up = std::make_shared<std::atomic<bool>>(false);
  // (an argument, unused: CAF 0.17 dereferences a null argument tuple for argument-less function actors)
  auto turn = [done, ended, give_up, hog_turn](caf::event_based_actor* self, int) -> caf::behavior {
    return {
        [=](sw::tick_atom, caf::actor& other) {
          if (give_up->load() || done()) {
            *ended = true;
            self->send_exit(other, caf::exit_reason::user_shutdown);
            self->quit();
            return;
          }
          std::this_thread::sleep_for(hog_turn);
          self->send(other, sw::tick_atom::value, caf::actor_cast<caf::actor>(self));
        },
    };
  };
  auto a = sys.spawn(turn, 0);
  auto b = sys.spawn(turn, 0);
  caf::anon_send(a, sw::tick_atom::value, b);
  return std::shared_ptr<void>(nullptr, [give_up](void*) { *give_up = true; });
}

// The service on one I/O thread, a final for every frame, overload seen at 1 s (32 KiB) of a browser's audio unread.
std::unique_ptr<harness> one_thread_harness() {
  sw::test::echo_options o;
  o.partials = false;
  return std::make_unique<harness>(
      [](sw::config& c) {
        c.io_threads = 1;
        c.overload_backlog = 1000ms;
      },
      sw::test::echo_provider(o));
}

TEST(Overload, AServerBehindReadingShedsItsNewestStream1013AndKeepsTheRest) {
  auto hp = one_thread_harness();
  auto& h = *hp;
  auto log = sw::test::capture_log(h);
  // Four participants, oldest first, each in a room of its own.
  std::vector<std::unique_ptr<ws_client>> clients;
  for (const char* who : {"a", "b", "c", "d"}) {
    clients.push_back(h.connect(std::string("room-") + who, who));
    expect_message(*clients.back(), "ready");
  }
  std::vector<std::unique_ptr<realtime_sender>> senders;
  for (auto& c : clients) senders.push_back(std::make_unique<realtime_sender>(*c));

  auto ended = std::make_shared<std::atomic<bool>>(false);
  auto hog = hog_until(
      h.svc->system(), [&h] { return counter(h, "ws.overload_closes") > 0; }, ended);
  ASSERT_TRUE(sw::test::eventually([&] { return ended->load(); }, 30s)) << log->all();

  // The server is behind: an upgrade meanwhile is refused, and says why.
  try {
    h.connect("room-e", "e");
    ADD_FAILURE() << "an upgrade while the server is behind was accepted";
  } catch (const sw::net::upgrade_rejected& r) {
    EXPECT_EQ(r.status, 503);
    EXPECT_NE(r.body.find("\"overloaded\""), std::string::npos) << r.body;
  }
  for (auto& s : senders) s->halt();

  // A tenth of the four (one, at least) went, the newest, and was told why.
  EXPECT_EQ(counter(h, "ws.overload_closes"), 1u);
  std::string reason;
  EXPECT_EQ(expect_close(*clients[3], 10'000, &reason), 1013);
  EXPECT_EQ(reason, "Server overloaded");
  // The three oldest go on: the server catches up with what waited, and they end as usual.
  for (std::size_t i : {0, 1, 2}) {
    clients[i]->send_text(R"({"type":"stop"})");
    expect_message(*clients[i], "\"stopped\"", 10'000);
    EXPECT_EQ(expect_close(*clients[i], 5000), 1000) << i;
  }
  EXPECT_NE(log->all().find("falls behind reading audio"), std::string::npos) << log->all();
  EXPECT_EQ(counter(h, "ws.overload_closes"), 1u);
  EXPECT_GE(counter(h, "ws.rejected_overload"), 1u);
}

// A server held up once (a pause of the process, a burst of other work) finds audio piled up, reads it at once and goes
// on: nothing is shed for that.
TEST(Overload, OnePauseOfTheServerShedsNothing) {
  auto hp = one_thread_harness();
  auto& h = *hp;
  std::vector<std::unique_ptr<ws_client>> clients;
  for (const char* who : {"a", "b"}) {
    clients.push_back(h.connect(std::string("room-") + who, who));
    expect_message(*clients.back(), "ready");
  }
  std::vector<std::unique_ptr<realtime_sender>> senders;
  const auto reads = [&h] { return h.svc->context().net->socket_reads.load(); };
  const auto start = reads();
  for (auto& c : clients) senders.push_back(std::make_unique<realtime_sender>(*c));
  // A second and a half of audio first: each connection has looked at its backlog before the pause.
  ASSERT_TRUE(sw::test::eventually([&] { return reads() > start + 150; }, 10s));
  // The only I/O thread held for 2.5 s at once: each client's audio fills the kernel's receive buffer (about 72 KiB),
  // more than the bound.
  auto held = std::make_shared<std::atomic<bool>>(false);
  auto blocker = h.svc->system().spawn(
      [held](caf::event_based_actor* self, int) -> caf::behavior {
        return {[=](sw::tick_atom) {
          std::this_thread::sleep_for(2500ms);
          *held = true;
          self->quit();
        }};
      },
      0);
  caf::anon_send(blocker, sw::tick_atom::value);
  ASSERT_TRUE(sw::test::eventually([&] { return held->load(); }, 10s));
  // Audio keeps coming for the two checks after the pause (a second apart): the first finds the pile, the second finds
  // it read.
  const auto resumed = reads();
  ASSERT_TRUE(sw::test::eventually([&] { return reads() > resumed + 250; }, 10s));
  for (auto& s : senders) s->halt();
  for (auto& c : clients) {
    c->send_text(R"({"type":"stop"})");
    expect_message(*c, "\"stopped\"", 10'000);
    EXPECT_EQ(expect_close(*c, 5000), 1000);
  }
  EXPECT_EQ(counter(h, "ws.overload_closes"), 0u);
  EXPECT_EQ(counter(h, "ws.rejected_overload"), 0u);
}

// A busy server still hands each client everything that waits for it each time its I/O thread comes round: the
// transcripts queued for a client go in one write, not one write per round. A server that wrote them one at a time
// fell ever further behind its clients (a load test at 1.5 times an ASan server's capacity measured transcripts 12 s
// late at the median), and its pings waited behind them until the heartbeat closed streams by the hundred (4408).
TEST(Overload, ABusyServerWritesEveryTranscriptThatWaitsEachTimeItComesRound) {
  auto hp = one_thread_harness();
  auto& h = *hp;
  auto speaker = h.connect("room", "speaker");
  expect_message(*speaker, "ready");
  auto listener = h.connect("room", "listener");
  expect_message(*listener, "connected");
  auto finals = std::make_shared<std::atomic<long>>(0);
  std::atomic<bool> done{false};
  std::thread reader([&] {
    while (!done) {
      auto m = listener->read(50ms);
      if (m.kind == ws_client::message::closed) return;
      if (m.kind == ws_client::message::text && m.data.find("transcript_final") != std::string::npos) ++*finals;
    }
  });
  std::shared_ptr<void> stop_reading(nullptr, [&](void*) {  // however the test ends
    done = true;
    reader.join();
  });
  realtime_sender sender(*speaker);
  // Turns of 100 ms on the only I/O thread; one of the two turning actors is always queued, so each step of a frame's
  // way (its read, the session, the relay, the session again, the room, the client's connection, its write) waits for
  // a turn: a frame's final reaches the listener some eight turns after its read. At each turn: the frames the server
  // has read, and the finals the listener has had.
  struct turns {
    std::mutex mu;
    std::vector<std::pair<std::uint64_t, long>> seen;
  };
  auto t = std::make_shared<turns>();
  auto ended = std::make_shared<std::atomic<bool>>(false);
  auto net = h.svc->context().net;
  auto hog = hog_until(
      h.svc->system(),
      [t, net, finals] {
        std::lock_guard<std::mutex> l(t->mu);
        t->seen.emplace_back(net->frames_in.load(), finals->load());
        return t->seen.size() > 20;
      },
      ended, 100ms);
  ASSERT_TRUE(sw::test::eventually([&] { return ended->load(); }, 30s));
  sender.halt();
  stop_reading.reset();
  std::lock_guard<std::mutex> l(t->mu);
  ASSERT_EQ(t->seen.size(), 21u);
  // What was read by turn 10 has been transcribed and written ten turns later.
  const auto read_by_10 = t->seen[10].first, had_at_20 = static_cast<std::uint64_t>(t->seen[20].second);
  EXPECT_GT(read_by_10, 30u) << "the server reads about five frames a turn";
  EXPECT_GE(had_at_20, read_by_10) << "finals the listener had after 20 turns, of " << read_by_10
                                   << " frames read by turn 10 (one write a turn delivers about one final a turn)";
}

}  // namespace
