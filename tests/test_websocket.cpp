// One participant stream end to end: connect, status, control messages, audio validation, stop,
// heartbeat and shutdown, through a real WebSocket client.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>

#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "proto/ws_frame.hpp"
#include "tests/support/harness.hpp"

namespace {

using sw::net::ws_client;
using sw::test::expect_close;
using sw::test::expect_message;
using sw::test::field;
using sw::test::harness;
using namespace std::chrono_literals;

std::vector<std::uint8_t> pcm(std::size_t bytes) {
  return std::vector<std::uint8_t>(bytes, 0);
}

TEST(WebSocket, ConnectedThenSttStatusInOrder) {
  harness h;
  auto c = ws_client::connect(h.ws(harness::token("room-1", "alice", "user-7", "Alice A")));
  auto first = c->read(3s);
  ASSERT_EQ(first.kind, ws_client::message::text);
  EXPECT_EQ(field(first.data, "type"), "connected");
  EXPECT_EQ(field(first.data, "sessionSlug"), "room-1");
  EXPECT_EQ(field(first.data, "userId"), "user-7");
  EXPECT_EQ(field(first.data, "identity"), "alice");
  EXPECT_EQ(field(first.data, "message"), "WebSocket connection established");
  EXPECT_GT(std::stoll(field(first.data, "ts")), 1'700'000'000'000LL);
  auto second = c->read(3s);
  EXPECT_EQ(field(second.data, "type"), "stt_status");
  EXPECT_EQ(field(second.data, "status"), "connecting");
  EXPECT_EQ(field(second.data, "provider"), "echo");
  auto third = c->read(3s);
  EXPECT_EQ(field(third.data, "type"), "stt_status");
  EXPECT_EQ(field(third.data, "status"), "ready");
  EXPECT_EQ(field(third.data, "sessionSlug"), "room-1");
}

TEST(WebSocket, WithoutProviderTheStreamReportsSttUnavailable) {
  harness h({}, std::nullopt);
  auto c = h.connect("room", "alice");
  expect_message(*c, "\"connected\"");
  auto status = expect_message(*c, "stt_status");
  EXPECT_EQ(field(status, "status"), "stopped");
  EXPECT_EQ(field(status, "provider"), "none");
  auto error = expect_message(*c, "\"error\"");
  EXPECT_EQ(field(error, "code"), "stt_unavailable");
  // the connection stays usable: audio is accepted (and goes nowhere), ping is answered
  auto frame = pcm(640);
  c->send_binary(frame.data(), frame.size());
  c->send_text(R"({"type":"ping"})");
  expect_message(*c, "pong");
}

TEST(WebSocket, PingIsAnsweredWithPong) {
  harness h;
  auto c = h.connect("room", "alice");
  c->send_text(R"({"type":"ping"})");
  auto pong = expect_message(*c, "pong");
  EXPECT_EQ(field(pong, "type"), "pong");
  EXPECT_GT(std::stoll(field(pong, "ts")), 0);
}

// One text frame of 200 000 '[' (under the frame limit) overflowed the recursive JSON parser's stack and killed the
// process for every room. Now it is invalid_json like any other bad text, and the connection stays.
TEST(WebSocket, DeeplyNestedJsonIsInvalidJsonAndTheServiceLives) {
  harness h;
  auto c = h.connect("room", "alice");
  auto other = h.connect("elsewhere", "bob");
  for (const auto& text : {std::string(200'000, '['), R"({"type":)" + std::string(100'000, '{'),
                           R"({"a":)" + std::string(65, '[') + std::string(65, ']') + "}"}) {
    c->send_text(text);
    EXPECT_EQ(field(expect_message(*c, "warning"), "code"), "invalid_json");
  }
  c->send_text(R"({"type":"ping","nested":[[[["fine"]]]]})");
  expect_message(*c, "pong");
  other->send_text(R"({"type":"ping"})");
  expect_message(*other, "pong");
}

// What a client sends is echoed in warnings: a lone surrogate ("\udc00" decodes to bytes that are not UTF-8) must
// not make the warning an invalid text frame (the client would drop the connection, 1007).
TEST(WebSocket, WarningsAreValidUtf8WhateverTheClientSent) {
  harness h;
  auto c = h.connect("room", "alice");
  c->send_text(R"({"type":"\udc00x"})");
  auto w = expect_message(*c, "warning");
  EXPECT_EQ(field(w, "code"), "unknown_message");
  EXPECT_NE(field(w, "message").find("\xEF\xBF\xBDx"), std::string::npos) << w;
  c->send_text(R"({"type":"ping"})");
  expect_message(*c, "pong");
}

TEST(WebSocket, InvalidJsonAndUnknownTypesWarnAndKeepTheConnection) {
  harness h;
  auto c = h.connect("room", "alice");
  c->send_text("{not json");
  auto w = expect_message(*c, "warning");
  EXPECT_EQ(field(w, "code"), "invalid_json");
  c->send_text(R"({"type":"dance"})");
  w = expect_message(*c, "warning");
  EXPECT_EQ(field(w, "code"), "unknown_message");
  c->send_text(R"({"type":"ping"})");
  expect_message(*c, "pong");
  EXPECT_TRUE(c->is_open());
}

TEST(WebSocket, InvalidAudioFramesWarnAndAreDropped) {
  harness h;
  auto c = h.connect("room", "alice");
  expect_message(*c, "ready");
  auto odd = pcm(641);
  c->send_binary(odd.data(), odd.size());
  auto w = expect_message(*c, "warning");
  EXPECT_EQ(field(w, "code"), "invalid_audio_frame");
  auto big = pcm(65'538);
  c->send_binary(big.data(), big.size());
  auto good = pcm(640);
  c->send_binary(good.data(), good.size());
  // only the valid frame reaches the relay: it is chunk 1
  auto fin = expect_message(*c, "transcript_final");
  EXPECT_EQ(field(fin, "text"), "chunk 1 640B");
}

// One very large message grows the connection's read buffer; the buffer goes back to its normal size once the message
// is handed over, and the gauge of what read buffers hold goes to 0 when the connection closes.
TEST(WebSocket, AVeryLargeMessageDoesNotKeepItsReadBufferForTheConnectionsLife) {
  harness h;
  auto c = h.connect("room", "alice");
  expect_message(*c, "ready");
  const auto normal = sw::test::metric(h, "net.read_buffer_bytes");
  ASSERT_GT(normal, 0);
  ASSERT_LT(normal, 16 * 1024);
  auto huge = pcm(200'000);  // within WS_MAX_MESSAGE (256 KiB), over the audio frame limit: refused with a warning
  c->send_binary(huge.data(), huge.size());
  EXPECT_EQ(field(expect_message(*c, "warning"), "code"), "invalid_audio_frame");
  auto good = pcm(640);
  c->send_binary(good.data(), good.size());
  EXPECT_TRUE(sw::test::eventually([&] { return sw::test::metric(h, "net.read_buffer_bytes") == normal; }))
      << "the read buffer still holds " << sw::test::metric(h, "net.read_buffer_bytes") << " bytes";
  c->close();
  EXPECT_TRUE(sw::test::eventually([&] { return sw::test::metric(h, "net.read_buffer_bytes") == 0; }))
      << sw::test::metric(h, "net.read_buffer_bytes") << " bytes left after the close";
}

// Text messages beyond 20 a second (40 at once) are dropped with a warning; a client that keeps flooding is closed
// 1008, and the service counts it.
TEST(WebSocket, AClientFloodingTextMessagesIsWarnedThenClosed1008) {
  harness h;
  auto c = h.connect("room", "alice");
  expect_message(*c, "ready");
  for (int i = 0; i < 400; ++i) c->send_text(R"({"type":"ping"})");
  EXPECT_EQ(field(expect_message(*c, "rate_limited"), "type"), "warning");
  std::string reason;
  EXPECT_EQ(expect_close(*c, 5000, &reason), 1008);
  EXPECT_EQ(reason, "Too many messages");
  EXPECT_TRUE(sw::test::eventually([&] { return sw::test::metric(h, "ws.text_floods") == 1; }));
  EXPECT_GE(sw::test::metric(h, "ws.rate_limited_texts"), 199);
}

// Tiny frames within the byte limit but beyond 250 a second (1 000 at once) are dropped with a warning; a client that
// keeps sending them is closed 1008. The client sends until it is closed, as a flooding one would: how many frames
// the server takes within a second depends on how busy its core is (3 000 at once were not always enough under
// ASan beside other tests).
TEST(WebSocket, AClientFloodingTinyAudioFramesIsWarnedThenClosed1008) {
  harness h;
  auto c = h.connect("room", "alice");
  expect_message(*c, "ready");
  const std::uint8_t two[2] = {0, 0};
  std::string warning;
  ws_client::message closed;
  for (int round = 0; round < 30 && closed.kind != ws_client::message::closed; ++round) {
    try {
      for (int i = 0; i < 1000; ++i) c->send_binary(two, sizeof two);
    } catch (const std::exception&) {  // closed while sending; the close frame is read below
    }
    for (auto m = c->read(std::chrono::milliseconds(1)); m.kind != ws_client::message::timeout;
         m = c->read(std::chrono::milliseconds(1))) {
      if (m.kind == ws_client::message::closed) {
        closed = m;
        break;
      }
      if (m.kind == ws_client::message::text && m.data.find("250 audio frames") != std::string::npos) warning = m.data;
    }
  }
  ASSERT_FALSE(warning.empty()) << "no warning about the number of frames";
  EXPECT_EQ(field(warning, "code"), "rate_limited");
  EXPECT_EQ(closed.close_code, 1008);
  EXPECT_EQ(closed.close_reason, "Too many messages");
  EXPECT_TRUE(sw::test::eventually([&] { return sw::test::metric(h, "audio.frame_floods") == 1; }));
}

// A bare TCP connection to the server on loopback that has sent its WebSocket upgrade for `token`; -1 if none.
// `early`: sent in the same write as the upgrade request, before the server's answer.
int connect_and_upgrade(std::uint16_t port, const std::string& token, const std::string& early = "") {
  const int fd = sw::test::connect_loopback(port);
  if (fd < 0) return -1;
  const std::string upgrade = "GET /api/realtime/transcribe?token=" + token +
                              " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" +
                              early;
  ::send(fd, upgrade.data(), upgrade.size(), MSG_NOSIGNAL);
  return fd;
}

// connect_and_upgrade, and the server's 101 read (-1 when it did not come; a failure).
int upgraded_client(std::uint16_t port, const std::string& token) {
  const int fd = connect_and_upgrade(port, token);
  if (fd < 0) return -1;
  std::string in;
  char buf[4096];
  while (in.find("\r\n\r\n") == std::string::npos) {
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
  }
  if (in.rfind("HTTP/1.1 101", 0) == 0) return fd;
  ADD_FAILURE() << "not upgraded: " << in;
  ::close(fd);
  return -1;
}

// `n` bytes, and the FIN of a shutdown in the same segment (corked): a client's last bytes and its end, together.
bool send_then_end(int fd, const void* bytes, std::size_t n) {
  const int on = 1;
  return ::setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on) == 0 &&
         ::send(fd, bytes, n, MSG_NOSIGNAL) == static_cast<ssize_t>(n) && ::shutdown(fd, SHUT_WR) == 0;
}

// Whether GET /metrics counts `n` live session actors.
bool sessions_live(const harness& h, int n) {
  auto m = sw::net::http_fetch(h.http("/metrics")).body;
  return field(m, "actors").find("\"session\":{\"live\":" + std::to_string(n) + ",") != std::string::npos;
}

// A frame the server sent (unmasked; none longer than 64 KiB in these tests).
struct server_frame {
  unsigned op = 0;
  std::string payload;
  // A close frame's code: 1005 when it carries none.
  std::uint16_t close_code() const {
    return payload.size() >= 2 ? static_cast<std::uint16_t>((static_cast<std::uint8_t>(payload[0]) << 8) |
                                                            static_cast<std::uint8_t>(payload[1]))
                               : 1005;
  }
  std::string close_reason() const { return payload.size() > 2 ? payload.substr(2) : ""; }
};

// Takes the first whole frame off `in`, if it holds one.
std::optional<server_frame> take_server_frame(std::string& in) {
  if (in.size() < 2) return std::nullopt;
  std::size_t len = static_cast<std::uint8_t>(in[1]) & 0x7f, head = 2;
  if (len == 126) {
    if (in.size() < 4) return std::nullopt;
    len = (static_cast<std::size_t>(static_cast<std::uint8_t>(in[2])) << 8) | static_cast<std::uint8_t>(in[3]);
    head = 4;
  }
  if (in.size() < head + len) return std::nullopt;
  server_frame f{static_cast<std::uint8_t>(in[0]) & 0x0fu, in.substr(head, len)};
  in.erase(0, head + len);
  return f;
}

// A client on a bare socket: upgrades, sends `first`, then `unit` (whole masked frames) over and over, as fast as the
// server takes it, until the server's close frame comes (or 20 s pass). Returns the close code (0: none) and its
// reason.
std::pair<std::uint16_t, std::string> flood_until_closed(std::uint16_t port, const std::string& token,
                                                         std::string first, const std::string& unit) {
  const int fd = connect_and_upgrade(port, token);
  if (fd < 0) return {0, "connect failed"};
  std::string blob;
  while (blob.size() < 65536) blob += unit;
  std::string in;  // what the server sent, from its first frame on
  bool upgraded = false;
  std::size_t sent = 0;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, static_cast<short>(POLLIN | (upgraded ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, 100) < 0) break;
    if (p.revents & POLLIN) {
      char buf[65536];
      const auto n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      in.append(buf, static_cast<std::size_t>(n));
      if (!upgraded) {
        const auto end = in.find("\r\n\r\n");
        if (end == std::string::npos) continue;
        if (in.rfind("HTTP/1.1 101", 0) != 0) return {0, in};
        in.erase(0, end + 4);
        upgraded = true;
      }
      while (auto f = take_server_frame(in)) {  // up to the server's close
        if (f->op == 0x8) {
          ::close(fd);
          return {f->close_code(), f->close_reason()};
        }
      }
    }
    if (upgraded && (p.revents & POLLOUT) && !first.empty()) {
      const auto n = ::send(fd, first.data(), first.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) first.erase(0, static_cast<std::size_t>(n));
    } else if (upgraded && (p.revents & POLLOUT)) {
      const auto n =
          ::send(fd, blob.data() + sent % unit.size(), blob.size() - sent % unit.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno != EAGAIN) break;
      if (n > 0) sent += static_cast<std::size_t>(n);
    }
    if (p.revents & (POLLERR | POLLHUP)) break;
  }
  ::close(fd);
  return {0, "no close frame"};
}

// Frames no handler of the session's sees (pings are answered and empty continuation frames taken in the read path):
// past 2 000 a second (8x AUDIO_MAX_FRAMES_PER_SECOND), 8 000 at once, the client is closed 1008. Before, either flood
// took a whole server core for as long as the client kept it up.
TEST(WebSocket, AClientFloodingPingsIsClosed1008) {
  harness h;
  const std::string ping = {'\x89', '\x80', 0, 0, 0, 0};  // masked, empty
  auto [code, reason] = flood_until_closed(h.port, harness::token("room", "alice"), "", ping);
  EXPECT_EQ(code, 1008) << reason;
  EXPECT_EQ(reason, "Too many messages");
  EXPECT_TRUE(sw::test::eventually([&] { return sw::test::metric(h, "ws.frame_floods") == 1; }));
}

TEST(WebSocket, AClientFloodingEmptyContinuationFramesIsClosed1008) {
  harness h;
  // A binary message begun with 2 bytes, then empty continuation frames that never finish it.
  const std::string first = {'\x02', '\x82', 0, 0, 0, 0, 0, 0};
  const std::string empty = {'\x00', '\x80', 0, 0, 0, 0};
  auto [code, reason] = flood_until_closed(h.port, harness::token("room", "alice"), first, empty);
  EXPECT_EQ(code, 1008) << reason;
  EXPECT_EQ(reason, "Too many messages");
  EXPECT_TRUE(sw::test::eventually([&] { return sw::test::metric(h, "ws.frame_floods") == 1; }));
}

// A masked frame as a client sends it (the key 1 2 3 4), `fin` and the opcode as given.
std::string client_frame(unsigned op, const std::string& payload, bool fin = true) {
  std::string f;
  f += static_cast<char>((fin ? 0x80 : 0) | op);
  const auto n = payload.size();
  if (n < 126) {
    f += static_cast<char>(0x80 | n);
  } else {
    f += static_cast<char>(0x80 | 126);
    f += static_cast<char>(n >> 8);
    f += static_cast<char>(n & 0xFF);
  }
  const char key[4] = {1, 2, 3, 4};
  f.append(key, 4);
  for (std::size_t i = 0; i < n; ++i) f += static_cast<char>(payload[i] ^ key[i % 4]);
  return f;
}

// A client on a bare socket: upgrades (`early` behind its request, in the same write), sends `bytes` in one write, then
// reads the server's frames up to its close frame and what follows it; once text frames holding each of `wait_for`
// have come (in any order), it sends `then`. `eof`: the server ended the TCP connection after its close frame, before
// we closed ours.
struct exchange {
  std::vector<server_frame> frames;
  bool eof = false;
  std::uint16_t close_code() const {
    return frames.empty() || frames.back().op != 0x8 ? 0 : frames.back().close_code();
  }
  std::string close_reason() const { return frames.empty() ? "" : frames.back().close_reason(); }
};
exchange send_raw(std::uint16_t port, const std::string& token, const std::string& bytes,
                  std::vector<std::string> wait_for = {}, const std::string& then = "", const std::string& early = "") {
  exchange out;
  const int fd = connect_and_upgrade(port, token, early);
  if (fd < 0) return out;
  std::string in;
  bool upgraded = false, closed = false;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[65536];
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) out.eof = closed;
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
    if (!upgraded) {
      const auto end = in.find("\r\n\r\n");
      if (end == std::string::npos) continue;
      if (in.rfind("HTTP/1.1 101", 0) != 0) break;
      in.erase(0, end + 4);
      upgraded = true;
      ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    }
    while (!closed) {
      auto f = take_server_frame(in);
      if (!f) break;
      out.frames.push_back(std::move(*f));
      closed = out.frames.back().op == 0x8;
      if (wait_for.empty() || out.frames.back().op != 0x1) continue;
      const auto& payload = out.frames.back().payload;
      wait_for.erase(std::remove_if(wait_for.begin(), wait_for.end(),
                                    [&](const std::string& w) { return payload.find(w) != std::string::npos; }),
                     wait_for.end());
      if (wait_for.empty()) ::send(fd, then.data(), then.size(), MSG_NOSIGNAL);
    }
  }
  ::close(fd);
  return out;
}

// The server's own framing holds a client to RFC 6455: a violation closes the connection with the code the RFC gives
// it (1002, 1007, 1009) and a reason, the server then ends the TCP connection, and each is counted and logged.
TEST(WebSocket, AClientBreakingTheProtocolIsClosedWithItsCode) {
  harness h([](sw::config& c) { c.ws_close_timeout = 60s; });  // the TCP connection ends without the timer's help
  std::string unmasked = "\x81\x02hi";
  std::string reserved = client_frame(0x1, "hi");
  reserved[0] = static_cast<char>(reserved[0] | 0x40);
  std::string too_big = "\x82\xff";  // a binary frame of 300 000 bytes (over 256 KiB): refused at its header
  for (int shift = 56; shift >= 0; shift -= 8) too_big += static_cast<char>((300'000ull >> shift) & 0xFF);
  too_big += std::string("\x01\x02\x03\x04", 4);
  const struct {
    std::string bytes;
    std::uint16_t code;
    std::string reason;
  } cases[] = {
      {unmasked, 1002, "Protocol error"},
      {reserved, 1002, "Protocol error"},
      {client_frame(0x3, "x"), 1002, "Protocol error"},
      {client_frame(0x0, "x"), 1002, "Protocol error"},
      {client_frame(0x9, "x", false), 1002, "Protocol error"},
      {client_frame(0x8, std::string("\x03\xed", 2)), 1002, "Invalid close code"},  // 1005
      {client_frame(0x8, std::string("\x13\x88", 2)), 1002, "Invalid close code"},  // 5000
      {client_frame(0x1, "caf\xc3"), 1007, "Invalid UTF-8"},
      {client_frame(0x8, std::string("\x03\xe8\xff", 3)), 1007, "Invalid UTF-8"},
      {too_big, 1009, "Message too big"},
  };
  int n = 0;
  for (const auto& c : cases) {
    auto x = send_raw(h.port, harness::token("room", "p" + std::to_string(n)), c.bytes);
    EXPECT_EQ(x.close_code(), c.code) << n;
    EXPECT_EQ(x.close_reason(), c.reason) << n;
    EXPECT_TRUE(x.eof) << n << ": the server ends the connection after its close frame";
    ++n;
  }
  EXPECT_TRUE(sw::test::eventually([&] { return sw::test::metric(h, "ws.protocol_errors") == n; }));
}

// A message may come in fragments with control frames between them (RFC 6455 §5.4): the ping is answered with its
// payload and the message arrives whole. A close is answered with the client's code and reason, and the server ends
// the TCP connection after it.
TEST(WebSocket, AFragmentedMessageWithAPingBetweenItsFragmentsArrivesWhole) {
  harness h([](sw::config& c) { c.ws_close_timeout = 60s; });
  const std::string bytes = client_frame(0x1, R"({"type")", false) + client_frame(0x9, "hi") +
                            client_frame(0x0, R"(:"pi)", false) + client_frame(0x0, R"(ng"})");
  auto x = send_raw(h.port, harness::token("room", "alice"), bytes, {R"("pong")"},
                    client_frame(0x8, sw::ws::close_payload(4000, "bye")));
  bool pong = false, answered = false;
  for (const auto& f : x.frames) {
    if (f.op == 0xA) pong = f.payload == "hi";
    if (f.op == 0x1 && field(f.payload, "type") == "pong") answered = true;
  }
  EXPECT_TRUE(pong) << "the ping between the fragments is answered with its payload";
  EXPECT_TRUE(answered) << "the fragmented {\"type\":\"ping\"} is read whole";
  EXPECT_EQ(x.close_code(), 4000);
  EXPECT_EQ(x.close_reason(), "bye") << "the client's reason comes back with its code, as Node's ws answered";
  EXPECT_TRUE(x.eof);
  EXPECT_EQ(sw::test::metric(h, "ws.protocol_errors"), 0);
}

// A client that writes every frame's length in 64 bits (or 16), not in the shortest form RFC 6455 asks senders for,
// worked with Node's `ws`, which takes any form: its audio is relayed and its messages read, with no protocol error.
TEST(WebSocket, FrameLengthsInALongerFormThanNeededAreTaken) {
  harness h([](sw::config& c) { c.ws_close_timeout = 60s; });
  auto long_form = [](unsigned op, const std::string& payload) {
    std::string f = client_frame(op, payload);
    const std::size_t head = f.size() - 4 - payload.size();  // the masking key and payload follow the length
    std::string len(1, static_cast<char>(0x80 | 127));
    for (int shift = 56; shift >= 0; shift -= 8) len += static_cast<char>((payload.size() >> shift) & 0xFF);
    return f.substr(0, 1) + len + f.substr(head);
  };
  const auto audio = pcm(640);
  auto x = send_raw(h.port, harness::token("room", "alice"),
                    long_form(0x2, std::string(audio.begin(), audio.end())) + long_form(0x1, R"({"type":"ping"})"),
                    {"chunk 1 640B", R"("pong")"}, client_frame(0x8, sw::ws::close_payload(4000, "bye")));
  bool pong = false, transcribed = false;
  for (const auto& f : x.frames) {
    if (f.op != 0x1) continue;
    if (field(f.payload, "type") == "pong") pong = true;
    if (field(f.payload, "text") == "chunk 1 640B") transcribed = true;
  }
  EXPECT_TRUE(transcribed) << "the audio frame with a 64-bit length is relayed";
  EXPECT_TRUE(pong) << "the ping message with a 64-bit length is read";
  EXPECT_EQ(x.close_code(), 4000);
  EXPECT_EQ(sw::test::metric(h, "ws.protocol_errors"), 0);
}

// A client may send its first messages behind its upgrade request, before our answer: RFC 6455 §4.1 asks it to wait,
// but Node's `ws`, which the old service ran, reads what came early, and so do we. Here a ping, an audio frame and the
// start of a text frame come with the request, and the rest of that frame after the answer: each is read, the audio
// relayed, and nothing is taken for a broken frame.
TEST(WebSocket, MessagesSentWithTheUpgradeRequestAreRead) {
  harness h([](sw::config& c) { c.ws_close_timeout = 60s; });
  const std::string dance = client_frame(0x1, R"({"type":"dance"})");
  const auto audio = pcm(640);
  const std::string early = client_frame(0x1, R"({"type":"ping"})") +
                            client_frame(0x2, std::string(audio.begin(), audio.end())) + dance.substr(0, 5);
  auto x = send_raw(h.port, harness::token("room", "alice"), dance.substr(5),
                    {"chunk 1 640B", "unknown_message", R"("pong")"},
                    client_frame(0x8, sw::ws::close_payload(4000, "bye")), early);
  bool pong = false, warned = false, transcribed = false;
  for (const auto& f : x.frames) {
    if (f.op != 0x1) continue;
    if (field(f.payload, "type") == "pong") pong = true;
    if (field(f.payload, "code") == "unknown_message") warned = true;
    if (field(f.payload, "text") == "chunk 1 640B")
      transcribed = true;  // its partial (the close goes at once) or final
  }
  EXPECT_TRUE(pong) << "the ping that came with the request is answered";
  EXPECT_TRUE(warned) << "the message split across the answer is read whole";
  EXPECT_TRUE(transcribed) << "the audio that came with the request is relayed";
  EXPECT_EQ(x.close_code(), 4000);
  EXPECT_EQ(sw::test::metric(h, "ws.protocol_errors"), 0);
}

TEST(WebSocket, AudioIsRelayedInOrderAndTranscriptsCarryTheSpeaker) {
  harness h;
  auto c = ws_client::connect(h.ws(harness::token("room", "alice", "", "Alice A")));
  expect_message(*c, "ready");
  for (std::size_t n : {320, 640, 960}) {
    auto f = pcm(n);
    c->send_binary(f.data(), f.size());
  }
  for (int i = 1; i <= 3; ++i) {
    auto partial = expect_message(*c, "transcript_partial");
    EXPECT_EQ(field(partial, "isFinal"), "false");
    auto fin = expect_message(*c, "transcript_final");
    EXPECT_EQ(field(fin, "text"), "chunk " + std::to_string(i) + " " + std::to_string(320 * i) + "B");
    EXPECT_EQ(field(fin, "speaker"), "alice");
    EXPECT_EQ(field(fin, "speakerId"), "alice");
    EXPECT_EQ(field(fin, "speakerName"), "Alice A");
    EXPECT_EQ(field(fin, "language"), "en");
    EXPECT_EQ(field(fin, "sessionSlug"), "room");
    EXPECT_EQ(field(fin, "utteranceId"), field(partial, "utteranceId"));
    EXPECT_NE(field(fin, "utteranceId").find("-u" + std::to_string(i)), std::string::npos);
  }
  auto m = sw::net::http_fetch(h.http("/metrics"));
  EXPECT_EQ(field(m.body, "totalMessagesReceived"), "3");
  EXPECT_EQ(field(m.body, "activeGladiaBridges"), "1");
  EXPECT_EQ(field(m.body, "activeConnections"), "1");
}

TEST(WebSocket, FasterThanTwiceRealTimeIsRateLimited) {
  harness h;
  auto c = h.connect("room", "alice");
  expect_message(*c, "ready");
  auto f = pcm(64'000);
  for (int i = 0; i < 6; ++i) c->send_binary(f.data(), f.size());  // 384 000 B at once > 320 000 B bucket
  auto w = expect_message(*c, "rate_limited", 5000);
  EXPECT_EQ(field(w, "type"), "warning");
  auto m = sw::net::http_fetch(h.http("/metrics"));
  EXPECT_NE(field(m.body, "counters").find("\"audio.rate_limited_frames\":1"), std::string::npos) << m.body;
}

TEST(WebSocket, StopDrainsThenSendsStoppedAndCloses1000) {
  harness h;
  auto c = h.connect("room", "alice");
  expect_message(*c, "ready");
  auto f = pcm(640);
  c->send_binary(f.data(), f.size());
  c->send_text(R"({"type":"stop"})");
  expect_message(*c, "transcript_final");
  auto stopped = expect_message(*c, "stt_status");
  EXPECT_EQ(field(stopped, "status"), "stopped");
  EXPECT_EQ(expect_close(*c), 1000);
}

// RFC 6455 §7.4: no close code above 4999 exists; the server fails such a close with 1002 instead of echoing it.
// Codes in the private range (4000-4999) are echoed as before.
TEST(WebSocket, ClientCloseCodeAbove4999IsRefused1002) {
  harness h;
  auto bad = h.connect("room", "alice");
  expect_message(*bad, "ready");
  EXPECT_EQ(bad->close(5000), 1002);
  auto big = h.connect("room", "bob");
  expect_message(*big, "ready");
  EXPECT_EQ(big->close(65535), 1002);
  auto ok = h.connect("room", "carol");
  expect_message(*ok, "ready");
  EXPECT_EQ(ok->close(4999), 4999);
  auto other = h.connect("room", "dave");  // the service goes on
  expect_message(*other, "ready");
}

TEST(WebSocket, LegacyFormat) {
  harness h;
  auto c = h.connect("room", "alice", "&format=legacy");
  expect_message(*c, "ready");
  auto f = pcm(640);
  c->send_binary(f.data(), f.size());
  auto m = expect_message(*c, "\"transcription\"");
  EXPECT_EQ(field(m, "is_final"), "false");
  m = expect_message(*c, "\"is_final\":true");
  EXPECT_EQ(field(m, "text"), "chunk 1 640B");
  EXPECT_NE(field(m, "utterance_id"), "<missing>");
  EXPECT_EQ(field(m, "speakerId"), "alice");
}

TEST(WebSocket, RelayErrorsReachTheClient) {
  sw::test::echo_options o;
  o.fail_code = "stt_auth_failed";
  harness h({}, sw::test::echo_provider(o));
  auto c = h.connect("room", "alice");
  auto e = expect_message(*c, "\"error\"");
  EXPECT_EQ(field(e, "code"), "stt_auth_failed");
  EXPECT_EQ(field(expect_message(*c, "stopped"), "status"), "stopped");
}

TEST(WebSocket, HeartbeatTimeoutCloses4408) {
  harness h([](sw::config& c) {
    c.ws_ping_interval = 50ms;
    c.ws_pong_timeout = 200ms;
  });
  auto c = h.connect("room", "alice");
  // Not reading, so the client answers no ping; the server gives up after the pong timeout.
  ASSERT_TRUE(sw::test::eventually([&] { return sw::test::metric(h, "ws.heartbeat_timeouts_total") == 1; }));
  std::string reason;
  EXPECT_EQ(expect_close(*c, 3000, &reason), 4408);
  EXPECT_EQ(reason, "Heartbeat timeout");
  auto m = sw::net::http_fetch(h.http("/metrics"));
  EXPECT_NE(field(m.body, "counters").find("\"ws.heartbeat_timeouts_total\":1"), std::string::npos) << m.body;
}

TEST(WebSocket, AnsweredPingsKeepTheConnection) {
  harness h([](sw::config& c) {
    c.ws_ping_interval = 50ms;
    c.ws_pong_timeout = 200ms;
  });
  auto c = h.connect("room", "alice");
  auto end = std::chrono::steady_clock::now() + 800ms;
  while (std::chrono::steady_clock::now() < end) {
    auto m = c->read(50ms);  // reading answers pings
    ASSERT_NE(m.kind, ws_client::message::closed) << m.close_code;
  }
  c->send_text(R"({"type":"ping"})");
  expect_message(*c, "pong");
}

TEST(WebSocket, ShutdownDrainsAndCloses1001) {
  harness h;
  auto c = h.connect("room", "alice");
  expect_message(*c, "ready");
  auto f = pcm(640);
  c->send_binary(f.data(), f.size());
  expect_message(*c, "transcript_final");
  // The client keeps reading (and answers the close handshake) on its own thread, as a browser would.
  // CAF 0.17 must be torn down from the thread that owns the service here: shutdown() runs on this one.
  std::string stopped;
  std::uint16_t code = 0;
  std::thread reader([&] {
    try {
      stopped = expect_message(*c, "stt_status", 5000);
      code = expect_close(*c, 5000);
    } catch (const std::exception& e) {
      stopped = e.what();
    }
  });
  EXPECT_TRUE(h.svc->shutdown());
  reader.join();
  EXPECT_EQ(field(stopped, "status"), "stopped") << stopped;
  EXPECT_EQ(code, 1001);
}

// A SIGTERM's drain keeps the port open: /ready turns 503 (draining) at once, so that a proxy's health check sends
// new streams elsewhere, and a new stream is refused 503 shutting_down, while the open stream drains (its upstream
// takes 1.5 s here) before its 1001. A proxy that saw a refused connection instead could not tell why.
TEST(WebSocket, WhileTheStreamsDrainReadyIs503AndNewStreamsAreRefused) {
  sw::test::echo_options slow;
  slow.drain = 1500ms;
  harness h({}, sw::test::echo_provider(slow));
  auto c = h.connect("room", "alice");
  expect_message(*c, "ready");
  std::uint16_t code = 0;
  std::thread reader([&] { code = expect_close(*c, 10000); });
  // What a proxy sees during the drain, asked from another thread: shutdown() runs on this one (CAF 0.17).
  bool draining_seen = false, closed_before = true;
  std::string ready_body, refusal;
  unsigned refused_with = 0;
  std::thread proxy([&] {
    auto ready = [&]() -> std::string {  // a refused connection reads as no answer
      try {
        auto r = sw::net::http_fetch(h.http("/ready"));
        return std::to_string(r.status) + " " + r.body;
      } catch (const std::exception& e) {
        return e.what();
      }
    };
    draining_seen = sw::test::eventually([&] { return ready().rfind("503 ", 0) == 0; }, 1000ms);
    ready_body = ready();
    try {
      sw::net::ws_client::connect(h.ws(harness::token("room", "bob")));
    } catch (const sw::net::upgrade_rejected& e) {
      refused_with = e.status;
      refusal = e.body;
    } catch (const std::exception& e) {
      refusal = e.what();
    }
    closed_before = code != 0;
  });
  h.svc->shutdown();
  proxy.join();
  reader.join();
  EXPECT_TRUE(draining_seen);
  EXPECT_NE(ready_body.find("\"draining\":true"), std::string::npos) << ready_body;
  EXPECT_NE(ready_body.find("\"status\":\"not_ready\""), std::string::npos) << ready_body;
  EXPECT_EQ(refused_with, 503u) << refusal;
  EXPECT_NE(refusal.find("shutting_down"), std::string::npos) << refusal;
  EXPECT_FALSE(closed_before) << "the open stream was closed before its drain";
  EXPECT_EQ(code, 1001);
}

// A client whose TCP end (FIN) comes in one segment with its last frames, and no close frame: the read that takes the
// frames comes back short, which reports the socket exhausted (net/edge_socket.hpp), and the end raises no edge of its
// own. The server finds it at the pause that follows (a peek), not at the next ping 15 s later: with a provider that
// does not batch (/egress/audio, the offline recognizer), and with one that does (pauses watched at
// STT_CHUNK_FLUSH_MS, chunks held in the kernel).
TEST(WebSocket, AClientsEndThatCameWithItsLastFramesIsSeenAtThePause) {
  // A read that starts late can find the end itself (about one time in six here): four clients at once, so that
  // without the peek some end is all but surely missed. A reset (the last case) is seen at once here, peek or not: it
  // comes after the server's read has taken the frames.
  constexpr int clients = 4;
  for (const auto& [batch, reset] : std::vector<std::pair<std::size_t, bool>>{{0, false}, {3200, false}, {0, true}}) {
    SCOPED_TRACE("batch " + std::to_string(batch) + (reset ? ", reset" : ", FIN"));
    auto provider = sw::test::echo_provider();
    provider.batch_bytes = batch;
    harness h({}, provider);
    std::vector<int> fds;
    for (int c = 0; c < clients; ++c) {
      const int fd = upgraded_client(h.port, harness::token("r", "alice-" + std::to_string(c)));
      ASSERT_GE(fd, 0);
      fds.push_back(fd);
    }
    std::vector<std::uint8_t> frames(5 * sw::ws::client_header_size(640) + 5 * 640);
    std::size_t at = 0;
    const auto audio = pcm(640);
    for (int i = 0; i < 5; ++i)
      at += sw::ws::write_client_frame(frames.data() + at, sw::ws::opcode::binary, audio.data(), audio.size(),
                                       0x01020304u + static_cast<std::uint32_t>(i));
    for (int& fd : fds) {
      if (reset) {
        // The frames, and at once a reset (SO_LINGER 0): it comes before the server's thread wakes for the frames.
        ASSERT_EQ(::send(fd, frames.data(), at, MSG_NOSIGNAL), static_cast<ssize_t>(at));
        const linger hard{1, 0};
        ASSERT_EQ(::setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard), 0);
        ::close(fd);
        fd = -1;
        continue;
      }
      ASSERT_TRUE(send_then_end(fd, frames.data(), at));
    }
    // Well within the ping interval (15 s): the pause comes 0.1 s (batching) or 0.5 s after the last frame. Mostly
    // the peek finds the end (net.ends_found_at_pause); holding chunks, each read also moves the socket's
    // SO_RCVLOWAT, which wakes it again.
    EXPECT_TRUE(sw::test::eventually([&] { return sessions_live(h, 0); }, 5s));
    for (const int fd : fds)
      if (fd >= 0) ::close(fd);
  }
}

// The same for a client that sends no audio (a listener): its end comes with a text message, a control frame, or
// part of a frame. No audio pause follows to look for it; the quiet interval after the read does (before, such a
// client stayed until the next ping, and one that closed only its sending side until its pong timeout, 45 s).
TEST(WebSocket, AClientsEndThatCameWithItsLastBytesOtherThanAudioIsSeen) {
  constexpr int clients = 4;
  const std::string text = client_frame(0x1, R"({"type":"ping"})");
  const struct {
    const char* what;
    std::string bytes;
  } lasts[] = {{"a text message", text}, {"a ping", client_frame(0x9, "hi")}, {"part of a frame", text.substr(0, 5)}};
  for (std::size_t batch : {std::size_t{0}, std::size_t{3200}}) {
    auto provider = sw::test::echo_provider();
    provider.batch_bytes = batch;
    harness h({}, provider);
    for (const auto& last : lasts) {
      SCOPED_TRACE("batch " + std::to_string(batch) + ", " + last.what);
      std::vector<int> fds;
      for (int c = 0; c < clients; ++c) {
        const int fd = upgraded_client(h.port, harness::token("r", "carol-" + std::to_string(c)));
        ASSERT_GE(fd, 0);
        fds.push_back(fd);
      }
      ASSERT_TRUE(sw::test::eventually([&] { return sessions_live(h, clients); }));
      for (const int fd : fds) ASSERT_TRUE(send_then_end(fd, last.bytes.data(), last.bytes.size()));
      // Well within the ping interval (15 s): 0.1 s (batching) or 0.5 s after the bytes.
      EXPECT_TRUE(sw::test::eventually([&] { return sessions_live(h, 0); }, 5s));
      for (const int fd : fds) ::close(fd);
    }
  }
}

TEST(WebSocket, ClientCloseEndsTheStreamAndItsRoom) {
  harness h;
  {
    auto c = h.connect("room-x", "alice");
    expect_message(*c, "ready");
    auto m = sw::net::http_fetch(h.http("/metrics"));
    EXPECT_NE(field(m.body, "sessionClients").find("\"room-x\":1"), std::string::npos) << m.body;
    c->close();
  }
  for (int i = 0; i < 100; ++i) {
    auto m = sw::net::http_fetch(h.http("/metrics"));
    // the room actor stops right after the gateway actor forgets the room: wait for both
    if (field(m.body, "sessionClients") == "{}" && field(m.body, "activeGladiaBridges") == "0" &&
        field(m.body, "actors").find("\"session\":{\"live\":0") != std::string::npos &&
        field(m.body, "actors").find("\"room\":{\"live\":0") != std::string::npos) {
      return;
    }
    std::this_thread::sleep_for(20ms);
  }
  FAIL() << "room and session were not released";
}

}  // namespace
