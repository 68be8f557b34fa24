// drain_executor: what a connection posts to itself runs inside the handler already running, in order, never inline;
// and a chunk of WebSocket frames read at once completes in one round of the scheduler, not in one a frame.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/websocket.hpp>

#include "net/client_layer.hpp"
#include "net/drain_executor.hpp"
#include "net/edge_socket.hpp"

// Beast's WebSocket tears its transport down through these (found by argument-dependent lookup): the bare socket's.
namespace sw::net {
template <class Next>
void teardown(boost::beast::role_type role, client_layer<Next>& s, boost::system::error_code& ec) {
  using boost::beast::websocket::teardown;
  teardown(role, s.next_layer(), ec);
}
template <class Next, class Handler>
void async_teardown(boost::beast::role_type role, client_layer<Next>& s, Handler&& handler) {
  using boost::beast::websocket::async_teardown;
  async_teardown(role, s.next_layer(), std::forward<Handler>(handler));
}
}  // namespace sw::net

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using sw::net::drain_executor;

static_assert(asio::execution::is_executor<drain_executor>::value);

// A post from inside a drain runs after the handler that posted it has returned and before the scheduler turns
// (one handler of the scheduler for all of it); a dispatch from inside runs at once; a post to the plain executor
// waits for the scheduler as always.
TEST(DrainExecutor, WhatAHandlerPostsToItsOwnKeyRunsAfterItInTheSameRound) {
  asio::io_context io{1};
  int key = 0;
  drain_executor d(io.get_executor(), &key);
  std::vector<std::string> order;
  asio::post(d, [&] {
    order.push_back("a begins");
    asio::post(d, [&] {
      order.push_back("b");
      asio::post(d, [&] { order.push_back("c, posted by b"); });
    });
    asio::post(io.get_executor(), [&] { order.push_back("x, to the plain executor"); });
    asio::dispatch(d, [&] { order.push_back("dispatched"); });
    order.push_back("a ends");
  });
  const auto handlers = io.run();
  const std::vector<std::string> want = {"a begins", "dispatched",     "a ends",
                                         "b",        "c, posted by b", "x, to the plain executor"};
  EXPECT_EQ(order, want);
  EXPECT_EQ(handlers, 2u) << "a, b and c in one handler of the scheduler; x in another";
}

// Another key's post is not taken into this drain: it goes to the scheduler (and opens a drain of its own there).
TEST(DrainExecutor, AnotherKeysPostWaitsForTheScheduler) {
  asio::io_context io{1};
  int k1 = 0, k2 = 0;
  drain_executor d1(io.get_executor(), &k1), d2(io.get_executor(), &k2);
  std::vector<std::string> order;
  asio::post(d1, [&] {
    asio::post(d2, [&] {
      order.push_back("2a");
      asio::post(d2, [&] { order.push_back("2b"); });
    });
    asio::post(d1, [&] { order.push_back("1b"); });
    order.push_back("1a");
  });
  const auto handlers = io.run();
  EXPECT_EQ(order, (std::vector<std::string>{"1a", "1b", "2a", "2b"}));
  EXPECT_EQ(handlers, 2u);
}

// A connection that keeps posting to itself runs drain_budget of it, then the rest waits behind what else was queued.
TEST(DrainExecutor, ADrainRunsItsBudgetThenLetsOthersGoFirst) {
  asio::io_context io{1};
  int key = 0;
  drain_executor d(io.get_executor(), &key);
  constexpr int chain = 150;
  std::vector<int> order;  // the chain's steps; -1: the other handler
  std::function<void(int)> step = [&](int i) {
    order.push_back(i);
    if (i + 1 < chain) asio::post(d, [&, i] { step(i + 1); });
  };
  asio::post(d, [&] { step(0); });
  asio::post(io.get_executor(), [&] { order.push_back(-1); });
  io.run();
  ASSERT_EQ(order.size(), std::size_t(chain) + 1);
  std::vector<int> steps;
  for (int v : order)
    if (v >= 0) steps.push_back(v);
  for (int i = 0; i < chain; ++i) ASSERT_EQ(steps[static_cast<std::size_t>(i)], i) << "in order";
  const auto other = std::find(order.begin(), order.end(), -1) - order.begin();
  EXPECT_EQ(other, static_cast<std::ptrdiff_t>(drain_executor::drain_budget) + 1)
      << "the first handler and its budget ran, then the other handler";
}

// Many posts from one handler, each posting another when it runs: all of the first run before any of the second, as
// the posts were made (however many wait at once).
TEST(DrainExecutor, PostsFromOneDrainRunInTheOrderPostedHoweverManyWait) {
  asio::io_context io{1};
  int key = 0;
  drain_executor d(io.get_executor(), &key);
  std::vector<int> order;
  asio::post(d, [&] {
    for (int i = 0; i < 40; ++i)
      asio::post(d, [&, i] {
        order.push_back(i);
        asio::post(d, [&, i] { order.push_back(100 + i); });
      });
  });
  io.run();
  std::vector<int> want;
  for (int i = 0; i < 40; ++i) want.push_back(i);
  for (int i = 0; i < 40; ++i) want.push_back(100 + i);
  EXPECT_EQ(order, want);
}

// A masked binary frame of `len` bytes (payload: the frame's number, then a counter).
std::vector<std::uint8_t> frame(std::uint32_t number, std::size_t len) {
  const std::uint8_t mask[4] = {0x11, 0x22, 0x33, 0x44};
  std::vector<std::uint8_t> f;
  f.reserve(8 + len);
  for (const auto b : {0x82, 0x80 | 126, static_cast<int>(len >> 8), static_cast<int>(len & 0xff)})
    f.push_back(static_cast<std::uint8_t>(b));
  for (const auto b : mask) f.push_back(b);
  for (std::size_t i = 0; i < len; ++i) {
    const auto b = i < 4 ? static_cast<std::uint8_t>(number >> (8 * i)) : static_cast<std::uint8_t>(i);
    f.push_back(b ^ mask[i % 4]);
  }
  return f;
}

// A reader whose reads complete a frame at a time: Beast's server WebSocket over the service's client_layer over
// edge_socket (audio tracked so that a read takes all the kernel holds), as the service had it before its own framing
// (net/server_websocket.hpp, which parses a chunk in one completion), its reads' completions bound to `Ex`; a raw
// client that writes chunks of frames in one write each. Returns the scheduler's handlers per chunk; every frame must
// arrive whole and in order.
template <class MakeEx>
double handlers_per_chunk(MakeEx make_ex, int chunks, int frames_per_chunk) {
  asio::io_context io{1};
  auto busy = asio::make_work_guard(io);  // run_one_for waits, however the reads come and go
  tcp::acceptor acc(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  tcp::socket client(io);
  client.connect(acc.local_endpoint());
  client.set_option(tcp::no_delay(true));
  using layer = sw::net::client_layer<sw::net::edge_socket>;
  boost::beast::websocket::stream<layer> ws(layer(sw::net::edge_socket(acc.accept())));
  EXPECT_TRUE(ws.next_layer().track_audio());
  auto ex = make_ex(ws.get_executor(), &ws);

  const std::string upgrade =
      "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  asio::write(client, asio::buffer(upgrade));
  bool accepted = false;
  ws.async_accept([&](boost::system::error_code ec) {
    EXPECT_FALSE(ec) << ec.message();
    accepted = true;
  });
  while (!accepted) io.run_one();
  asio::streambuf response;
  asio::read_until(client, response, "\r\n\r\n");

  constexpr std::size_t len = 640;
  std::vector<std::uint8_t> buf(64 * 1024);
  std::uint32_t received = 0;
  bool failed = false;
  std::vector<std::uint8_t> msg;  // the message being read (a read may bring part of a frame)
  std::function<void()> read = [&] {
    ws.async_read_some(asio::buffer(buf), asio::bind_executor(ex, [&](boost::system::error_code ec, std::size_t n) {
                         if (ec) {
                           ADD_FAILURE() << "frame " << received << ": " << ec.message();
                           failed = true;
                           return;
                         }
                         msg.insert(msg.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
                         if (ws.is_message_done()) {
                           const std::uint32_t number =
                               msg.size() < 4 ? ~0u : msg[0] | msg[1] << 8 | msg[2] << 16 | std::uint32_t(msg[3]) << 24;
                           if (msg.size() != len || number != received) {
                             ADD_FAILURE() << "frame " << number << " of " << msg.size() << " bytes where " << received
                                           << " was due";
                             failed = true;
                             return;
                           }
                           ++received;
                           msg.clear();
                         }
                         read();
                       }));
  };
  read();
  std::size_t handlers = 0;
  std::uint32_t sent = 0;
  for (int c = 0; c < chunks && !failed; ++c) {
    std::vector<std::uint8_t> chunk;
    for (int i = 0; i < frames_per_chunk; ++i) {
      const auto f = frame(sent++, len);
      chunk.insert(chunk.end(), f.begin(), f.end());
    }
    asio::write(client, asio::buffer(chunk));  // one write: on loopback the chunk arrives whole
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (received < sent && !failed && std::chrono::steady_clock::now() < deadline)
      handlers += io.run_one_for(std::chrono::milliseconds(100));
    EXPECT_EQ(received, sent) << "chunk " << c;
  }
  return static_cast<double>(handlers) / chunks;
}

TEST(DrainExecutor, AChunkOfFramesReadAtOnceCompletesInOneRoundOfTheScheduler) {
  const auto drained = handlers_per_chunk(
      [](asio::any_io_executor inner, const void* key) { return drain_executor(inner, key); }, 50, 5);
  // The same reads with their completions on the connection's own executor, as before: each frame after the first
  // completes through a post of its own (the read-ahead's or Beast's), a round of the scheduler each.
  const auto plain = handlers_per_chunk([](asio::any_io_executor inner, const void*) { return inner; }, 50, 5);
  std::printf("handlers of the scheduler per chunk of 5 frames: %.2f drained, %.2f plain\n", drained, plain);
  EXPECT_LE(drained, 1.5) << "plain executor: " << plain;
  EXPECT_GE(plain, 4.0) << "the case this is about did not arise (each frame a read of its own?)";
}

// More frames at once than a drain's budget: all of them arrive, in order, in a few rounds.
TEST(DrainExecutor, AChunkLargerThanTheBudgetArrivesWholeAndInOrder) {
  const auto drained = handlers_per_chunk(
      [](asio::any_io_executor inner, const void* key) { return drain_executor(inner, key); }, 5, 80);
  std::printf("handlers of the scheduler per chunk of 80 frames: %.2f\n", drained);
  EXPECT_GE(drained, 2.0);
  EXPECT_LE(drained, 10.0);
}

}  // namespace
