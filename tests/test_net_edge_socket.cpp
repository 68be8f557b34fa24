// edge_socket over real loopback TCP: what it reads, what it reports, and how many recvmsg it costs.
#include <dlfcn.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/write.hpp>

#include "net/edge_socket.hpp"

// Every recvmsg of this program passes here (Asio calls ::recvmsg): the calls on the watched descriptor are counted.
namespace {
std::atomic<int> watched_fd{-1};
std::atomic<int> recvmsg_calls{0};
}  // namespace

extern "C" ssize_t recvmsg(int fd, struct msghdr* msg, int flags) {
  using fn = ssize_t (*)(int, struct msghdr*, int);
  static const auto next = reinterpret_cast<fn>(dlsym(RTLD_NEXT, "recvmsg"));
  if (fd == watched_fd.load()) ++recvmsg_calls;
  return next(fd, msg, flags);
}

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using sw::net::edge_socket;

// A connected pair on loopback: `server` reads through edge_socket, `client` is a plain socket written synchronously.
struct pair {
  asio::io_context io{1};
  tcp::socket client{io};
  std::optional<edge_socket> server;

  pair() {
    tcp::acceptor acc(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    client.connect(acc.local_endpoint());
    server.emplace(acc.accept());
    client.set_option(tcp::no_delay(true));
    watched_fd = server->native_handle();
    recvmsg_calls = 0;
  }
  ~pair() { watched_fd = -1; }

  // Runs the context until `done`, at most 5 s.
  template <class Pred>
  bool run_until(Pred done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      io.restart();
      io.run_one_for(std::chrono::milliseconds(50));
    }
    return done();
  }
};

std::vector<std::uint8_t> pattern(std::size_t n, std::uint32_t seed) {
  std::vector<std::uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<std::uint8_t>(rng());
  return v;
}

// One read's outcome.
struct outcome {
  bool done = false;
  boost::system::error_code ec;
  std::size_t n = 0;
};

// Starts a read and runs what is ready: a read with nothing to read is left waiting.
template <class Wrap>
std::shared_ptr<outcome> start_read(pair& p, asio::mutable_buffer b, Wrap wrap) {
  auto o = std::make_shared<outcome>();
  p.server->async_read_some(b, wrap([o](boost::system::error_code ec, std::size_t n) {
                              o->ec = ec;
                              o->n = n;
                              o->done = true;
                            }));
  p.io.restart();
  p.io.poll();
  return o;
}
std::shared_ptr<outcome> start_read(pair& p, asio::mutable_buffer b) {
  return start_read(p, b, [](auto h) { return h; });
}

// The WebSocket case: the read waits first, then a frame arrives. Asio's own read tries recvmsg before it waits and
// finds nothing, so it costs two a frame; a read that came back short needs no such try.
TEST(EdgeSocket, AFrameThatArrivesWhileTheReadWaitsCostsOneRecvmsg) {
  pair p;
  const auto data = pattern(200 * 646, 1);
  std::vector<std::uint8_t> got;
  std::vector<std::uint8_t> buf(4096);
  for (int i = 0; i < 200; ++i) {
    auto r = start_read(p, asio::buffer(buf));
    ASSERT_FALSE(r->done);  // the read is queued, waiting
    asio::write(p.client, asio::buffer(data.data() + i * 646, 646));
    ASSERT_TRUE(p.run_until([&] { return r->done; })) << "frame " << i;
    ASSERT_FALSE(r->ec) << r->ec.message();
    got.insert(got.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(r->n));
    ASSERT_EQ(got.size(), std::size_t(i + 1) * 646) << "frame " << i;
  }
  EXPECT_EQ(got, data);
  // 200 frames; the very first read still tries once (nothing has been read yet, so nothing says the socket is empty).
  EXPECT_LE(recvmsg_calls.load(), 202) << "a recvmsg that finds nothing before each frame";
  EXPECT_GE(recvmsg_calls.load(), 200) << "the recvmsg counter missed the reads (is it still in the call path?)";
}

// A read that fills its buffer may have left bytes behind: the next read takes them at once, without waiting for an
// edge that will never come. Whatever the sizes of the writes and of the reads, the bytes arrive whole and in order.
TEST(EdgeSocket, AReadThatFillsItsBufferLeavesTheRestForTheNextReadAtOnce) {
  pair p;
  const auto data = pattern(300000, 2);
  std::mt19937 rng(3);
  std::vector<std::uint8_t> got;
  std::vector<std::uint8_t> buf(70000);
  std::size_t sent = 0;
  while (got.size() < data.size()) {
    if (sent < data.size() && rng() % 2 == 0) {
      const std::size_t n = std::min<std::size_t>(1 + rng() % 20000, data.size() - sent);
      asio::write(p.client, asio::buffer(data.data() + sent, n));
      sent += n;
    }
    const std::size_t room = 1 + rng() % buf.size();
    auto r = start_read(p, asio::buffer(buf.data(), room));
    if (sent == got.size() && sent < data.size()) {  // nothing on its way yet: send while the read waits
      const std::size_t n = std::min<std::size_t>(1 + rng() % 20000, data.size() - sent);
      asio::write(p.client, asio::buffer(data.data() + sent, n));
      sent += n;
    }
    ASSERT_TRUE(p.run_until([&] { return r->done; })) << "stuck at " << got.size() << " of " << sent << " sent";
    ASSERT_FALSE(r->ec) << r->ec.message();
    got.insert(got.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(r->n));
  }
  EXPECT_EQ(got, data);
}

// A read ahead takes everything the kernel holds in one recvmsg: its buffer first, the rest kept (allocated at its
// size, freed once taken). Reads of every size, served from what was kept where some is left, give back the bytes
// whole and in order, with one recvmsg per write (each write lands while the socket is empty and read to its end).
TEST(EdgeSocket, AReadAheadTakesEverythingTheKernelHoldsInOneRecvmsg) {
  pair p;
  const auto data = pattern(200000, 4);
  std::mt19937 rng(5);
  std::vector<std::uint8_t> got, buf(4096);
  sw::net::read_ahead ahead;
  std::size_t sent = 0;
  int writes = 0;
  while (got.size() < data.size()) {
    const std::size_t room = 1 + rng() % 1536;
    if (ahead.available() > 0) {
      const auto n = ahead.take(buf.data(), room);
      got.insert(got.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(n));
      continue;
    }
    if (sent == got.size()) {  // all read: the next write lands in an empty socket
      const std::size_t n = std::min<std::size_t>(1 + rng() % 20000, data.size() - sent);
      asio::write(p.client, asio::buffer(data.data() + sent, n));
      sent += n;
      ++writes;
    }
    auto o = std::make_shared<outcome>();
    p.server->async_read_some_ahead(asio::buffer(buf.data(), room), ahead,
                                    [o](boost::system::error_code ec, std::size_t n) {
                                      o->ec = ec;
                                      o->n = n;
                                      o->done = true;
                                    });
    ASSERT_TRUE(p.run_until([&] { return o->done; })) << "stuck at " << got.size() << " of " << sent << " sent";
    ASSERT_FALSE(o->ec) << o->ec.message();
    ASSERT_LE(o->n, room);
    got.insert(got.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(o->n));
    if (o->n < room) {
      EXPECT_EQ(ahead.available(), 0u) << "a short read kept bytes";
    }
  }
  EXPECT_EQ(got, data);
  EXPECT_EQ(ahead.data, nullptr) << "freed once taken";
  // A write can arrive in two segments that the first read splits: at most one more recvmsg each, never one a read.
  EXPECT_LE(recvmsg_calls.load(), 2 * writes + 1);
  EXPECT_GE(recvmsg_calls.load(), writes);
}

TEST(EdgeSocket, TheEndOfTheStreamAndCancellationAreReported) {
  pair p;
  std::vector<std::uint8_t> buf(64);

  // Cancelled while it waits, per operation (Beast binds cancellation slots) and for the socket.
  asio::cancellation_signal signal;
  auto r = start_read(p, asio::buffer(buf), [&](auto h) { return asio::bind_cancellation_slot(signal.slot(), h); });
  ASSERT_FALSE(r->done);
  signal.emit(asio::cancellation_type::terminal);
  ASSERT_TRUE(p.run_until([&] { return r->done; }));
  EXPECT_EQ(r->ec, asio::error::operation_aborted);

  r = start_read(p, asio::buffer(buf));
  ASSERT_FALSE(r->done);
  p.server->cancel();
  ASSERT_TRUE(p.run_until([&] { return r->done; }));
  EXPECT_EQ(r->ec, asio::error::operation_aborted);

  // A short read, then the peer's end while the next read waits.
  asio::write(p.client, asio::buffer("abc", 3));
  r = start_read(p, asio::buffer(buf));
  ASSERT_TRUE(p.run_until([&] { return r->done; }));
  EXPECT_FALSE(r->ec);
  EXPECT_EQ(r->n, 3u);
  r = start_read(p, asio::buffer(buf));
  ASSERT_FALSE(r->done);
  p.client.shutdown(tcp::socket::shutdown_send);
  ASSERT_TRUE(p.run_until([&] { return r->done; }));
  EXPECT_EQ(r->ec, asio::error::eof);

  // An empty read completes at once with nothing.
  r = start_read(p, asio::mutable_buffer());
  ASSERT_TRUE(p.run_until([&] { return r->done; }));
  EXPECT_FALSE(r->ec);
  EXPECT_EQ(r->n, 0u);
}

}  // namespace
