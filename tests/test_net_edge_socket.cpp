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
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>

#include <ctime>
#include <future>
#include <string>
#include <thread>

#include "net/edge_socket.hpp"
#include "net/upstream.hpp"

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

// A socket that stamps receipts notes, for each read, when the kernel received the last segment it took, however
// late the read: both reads (plain and ahead) give the time of the write they took, not of the read.
TEST(EdgeSocket, AReadNotesWhenTheKernelReceivedWhatItTook) {
  pair p;
  ASSERT_TRUE(p.server->stamp_receipts());
  EXPECT_EQ(p.server->receipt_realtime_ns(), 0);
  auto realtime_ns = [] {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  };
  std::vector<std::uint8_t> buf(4096);
  // The kernel turns its receive stamps on for the first socket that asks in a work item of its own, a moment later
  // (net_enable_timestamp): until then segments arrive unstamped. A byte at a time until one comes stamped.
  ASSERT_TRUE(p.run_until([&] {
    asio::write(p.client, asio::buffer(buf.data(), 1));
    bool read = false;
    p.server->async_read_some(asio::buffer(buf), [&](boost::system::error_code, std::size_t) { read = true; });
    p.run_until([&] { return read; });
    return p.server->receipt_realtime_ns() != 0;
  })) << "no segment came stamped";
  const auto data = pattern(3000, 6);
  for (int ahead_read = 0; ahead_read < 2; ++ahead_read) {
    const auto before = realtime_ns();
    asio::write(p.client, asio::buffer(data));
    const auto written = realtime_ns();
    std::this_thread::sleep_for(std::chrono::milliseconds(60));  // the reader is late: the bytes wait in the kernel
    auto o = std::make_shared<outcome>();
    auto done = [o](boost::system::error_code ec, std::size_t n) {
      o->ec = ec;
      o->n = n;
      o->done = true;
    };
    sw::net::read_ahead ahead;
    if (ahead_read)
      p.server->async_read_some_ahead(asio::buffer(buf.data(), 1000), ahead, done);
    else
      p.server->async_read_some(asio::buffer(buf), done);
    ASSERT_TRUE(p.run_until([&] { return o->done; }));
    ASSERT_FALSE(o->ec) << o->ec.message();
    EXPECT_EQ(o->n + ahead.available(), data.size());
    const auto at = p.server->receipt_realtime_ns();
    EXPECT_GE(at, before) << "read " << ahead_read;
    EXPECT_LE(at, written) << "the kernel's receipt, not the read 60 ms later (read " << ahead_read << ")";
  }
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

// The upstream WebSocket (a relay's connection to its STT provider) reads through edge_socket too: each message the
// peer sends, paced so that each arrives alone, costs one recvmsg (Asio's own read tried a second that found nothing
// before it waited: about 2 a message).
TEST(EdgeSocket, TheUpstreamWebSocketReadsEachMessageWithOneRecvmsg) {
  namespace websocket = boost::beast::websocket;
  constexpr int messages = 100;
  asio::io_context io;
  tcp::acceptor acc(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = acc.local_endpoint().port();
  std::thread peer([&] {
    tcp::socket s(io);
    acc.accept(s);
    websocket::stream<tcp::socket&> ws(s);
    ws.accept();
    // the client's descriptor: the one of this process whose local port is the peer's remote port
    const auto client_port = s.remote_endpoint().port();
    for (int fd = 0; fd < 4096; ++fd) {
      sockaddr_storage a{};
      socklen_t len = sizeof a;
      if (fd != s.native_handle() && getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0 &&
          a.ss_family == AF_INET && ntohs(reinterpret_cast<sockaddr_in*>(&a)->sin_port) == client_port) {
        recvmsg_calls = 0;
        watched_fd = fd;
        break;
      }
    }
    ws.text(true);
    for (int i = 0; i < messages; ++i) {
      ws.write(asio::buffer(std::string(R"({"type":"audio_chunk","acknowledged":true})")));
      std::this_thread::sleep_for(std::chrono::milliseconds(3));  // the pace: each message alone on the wire
    }
    boost::system::error_code ec;
    ws.close(websocket::close_code::normal, ec);
  });
  std::atomic<int> got{0};
  std::promise<std::uint16_t> closed;
  sw::net::ws_events ev;
  ev.text = [&](std::string) { ++got; };
  ev.closed = [&](std::uint16_t code, std::string) { closed.set_value(code); };
  sw::net::outbound out;
  auto ws = out.connect_ws("ws://127.0.0.1:" + std::to_string(port) + "/v2/live", {}, ev);
  auto done = closed.get_future();
  ASSERT_EQ(done.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  peer.join();
  const int calls = recvmsg_calls.load();
  watched_fd = -1;
  EXPECT_EQ(done.get(), 1000);
  EXPECT_EQ(got.load(), messages);
  EXPECT_LE(calls, messages + 5) << "a recvmsg that finds nothing after each message";
  EXPECT_GE(calls, messages) << "the recvmsg counter missed the reads (is it still in the call path?)";
}

// Its connect, TLS and WebSocket handshakes are bounded by the connection timeout: a peer that accepts the TCP
// connection and then says nothing is given up on, for ws and wss alike.
TEST(EdgeSocket, AnUpstreamPeerThatNeverAnswersTheHandshakeIsGivenUpAtTheTimeout) {
  asio::io_context io;
  tcp::acceptor acc(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = acc.local_endpoint().port();
  std::vector<std::shared_ptr<tcp::socket>> held;  // accepted, never answered
  std::atomic<bool> stop{false};
  acc.non_blocking(true);
  std::thread peer([&] {
    while (!stop) {
      auto s = std::make_shared<tcp::socket>(io);
      boost::system::error_code ec;
      acc.accept(*s, ec);
      if (!ec) held.push_back(s);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  sw::net::outbound out;
  for (const std::string scheme : {"ws", "wss"}) {
    std::promise<std::pair<std::uint16_t, std::string>> closed;
    sw::net::ws_events ev;
    ev.closed = [&](std::uint16_t code, std::string reason) { closed.set_value({code, std::move(reason)}); };
    sw::net::client_options o;
    o.timeout = std::chrono::milliseconds(300);
    const auto t0 = std::chrono::steady_clock::now();
    auto ws = out.connect_ws(scheme + "://127.0.0.1:" + std::to_string(port) + "/v2/live", o, ev);
    auto f = closed.get_future();
    ASSERT_EQ(f.wait_for(std::chrono::seconds(10)), std::future_status::ready) << scheme << ": never given up";
    const auto waited = std::chrono::steady_clock::now() - t0;
    const auto [code, reason] = f.get();
    EXPECT_EQ(code, 1006) << scheme;
    EXPECT_GE(waited, std::chrono::milliseconds(250)) << scheme << ": " << reason;
    EXPECT_LT(waited, std::chrono::seconds(3)) << scheme << ": " << reason;
    EXPECT_NE(reason.find(scheme == "ws" ? "websocket handshake failed" : "TLS handshake"), std::string::npos)
        << reason;
  }
  stop = true;
  peer.join();
}

}  // namespace

// ahead_socket under a Beast WebSocket server (the fake Gladia's read): Beast reads 1 536 bytes of a frame first, then
// its rest; the first read takes the whole message the kernel holds and the rest is served from what it kept. So a
// relay's chunk costs one recvmsg, not two (and not a third that finds nothing before the next chunk).
TEST(EdgeSocket, AWebSocketServerOverAheadSocketReadsAChunkInOneRecvmsg) {
  namespace websocket = boost::beast::websocket;
  asio::io_context io{1};
  tcp::acceptor acc(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  websocket::stream<tcp::socket> client(io);
  client.next_layer().connect(acc.local_endpoint());
  websocket::stream<sw::net::ahead_socket> server(sw::net::ahead_socket(acc.accept()));
  bool accepted = false, shook = false;
  server.async_accept([&](boost::system::error_code ec) { accepted = !ec; });
  client.async_handshake("127.0.0.1", "/v2/live", [&](boost::system::error_code ec) { shook = !ec; });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (!(accepted && shook) && std::chrono::steady_clock::now() < deadline)
    io.run_one_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(accepted && shook);
  client.binary(true);
  watched_fd = server.next_layer().native_handle();
  recvmsg_calls = 0;
  const int chunks = 100;
  for (int i = 0; i < chunks; ++i) {
    const auto chunk = pattern(3200, static_cast<std::uint32_t>(10 + i));
    boost::beast::flat_buffer got;
    bool done = false;
    boost::system::error_code rec;
    server.async_read(got, [&](boost::system::error_code ec, std::size_t) {
      rec = ec;
      done = true;
    });
    io.restart();
    io.poll();
    ASSERT_FALSE(done);  // waiting for the chunk
    client.write(asio::buffer(chunk));
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done && std::chrono::steady_clock::now() < until) {
      io.restart();
      io.run_one_for(std::chrono::milliseconds(50));
    }
    ASSERT_TRUE(done) << "chunk " << i;
    ASSERT_FALSE(rec) << rec.message();
    const auto* p = static_cast<const std::uint8_t*>(got.data().data());
    ASSERT_EQ(std::vector<std::uint8_t>(p, p + got.size()), chunk) << "chunk " << i;
  }
  watched_fd = -1;
  // The first read tries once before it waits (nothing yet says the socket is empty).
  EXPECT_LE(recvmsg_calls.load(), chunks + 1) << "more than one recvmsg a chunk";
  EXPECT_GE(recvmsg_calls.load(), chunks) << "the recvmsg counter missed the reads";
}
