// Every upgrade rejection is a complete HTTP response, read by a real WebSocket client.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <ctime>

#include <gtest/gtest.h>

#include "proto/ws_frame.hpp"
#include "tests/support/harness.hpp"

namespace {

using sw::test::field;
using sw::test::harness;

sw::net::upgrade_rejected rejection(const std::string& url) {
  try {
    auto c = sw::net::ws_client::connect(url);
  } catch (const sw::net::upgrade_rejected& e) {
    return e;
  }
  ADD_FAILURE() << "upgrade was accepted: " << url;
  return sw::net::upgrade_rejected(0, "", {});
}

const std::string* header(const sw::net::upgrade_rejected& r, const std::string& name) {
  for (auto& [k, v] : r.headers)
    if (k == name) return &v;
  return nullptr;
}

void expect_complete_json(const sw::net::upgrade_rejected& r) {
  ASSERT_TRUE(header(r, "content-type"));
  EXPECT_EQ(*header(r, "content-type"), "application/json");
  ASSERT_TRUE(header(r, "content-length"));
  EXPECT_EQ(*header(r, "content-length"), std::to_string(r.body.size()));
  ASSERT_TRUE(header(r, "connection"));
  EXPECT_EQ(*header(r, "connection"), "close");
  ASSERT_TRUE(header(r, "access-control-allow-origin"));
}

TEST(Upgrade, MissingTokenIs401) {
  harness h;
  auto r = rejection(h.ws(""));
  EXPECT_EQ(r.status, 401u);
  EXPECT_EQ(field(r.body, "error"), "invalid_token");
  EXPECT_EQ(field(r.body, "message"), "missing token");
  expect_complete_json(r);
  r = rejection("ws://127.0.0.1:" + std::to_string(h.port) + "/api/realtime/transcribe");
  EXPECT_EQ(r.status, 401u);
}

TEST(Upgrade, BadTokensAre401) {
  harness h;
  sw::token_claims c{"room", "alice", "", "", "", 0, ""};
  auto now = static_cast<std::int64_t>(std::time(nullptr));
  for (auto tok : {sw::mint_token(c, "wrong-secret", now + 60), sw::mint_token(c, sw::test::secret, now - 60),
                   std::string("not.a.token"), std::string("eyJhbGciOiJub25lIn0.eyJzZXNzaW9uU2x1ZyI6InIifQ.")}) {
    auto r = rejection(h.ws(tok));
    EXPECT_EQ(r.status, 401u) << tok;
    EXPECT_EQ(field(r.body, "error"), "invalid_token");
    expect_complete_json(r);
  }
}

TEST(Upgrade, SessionSlugMismatchIs403) {
  harness h;
  auto r = rejection(h.ws(harness::token("room-a", "alice"), "&sessionSlug=room-b"));
  EXPECT_EQ(r.status, 403u);
  EXPECT_EQ(field(r.body, "error"), "session_mismatch");
  expect_complete_json(r);
  // the matching slug is accepted
  auto ok = h.connect("room-a", "alice", "&sessionSlug=room-a");
  EXPECT_NE(sw::test::expect_message(*ok, "\"connected\"").find("room-a"), std::string::npos);
}

TEST(Upgrade, OtherPathsAre404) {
  harness h;
  auto r = rejection("ws://127.0.0.1:" + std::to_string(h.port) + "/elsewhere?token=" + harness::token("r", "a"));
  EXPECT_EQ(r.status, 404u);
  EXPECT_EQ(field(r.body, "path"), "/elsewhere");
  expect_complete_json(r);
}

TEST(Upgrade, PerUserLimitIs429WithRetryAfter) {
  harness h([](sw::config& c) { c.max_streams_per_user = 2; });
  auto a = h.connect("room", "alice-1", "", "user-1");
  auto b = h.connect("room", "alice-2", "", "user-1");
  sw::test::expect_message(*b, "connected");
  auto r = rejection(h.ws(harness::token("room", "alice-3", "user-1")));
  EXPECT_EQ(r.status, 429u);
  EXPECT_EQ(field(r.body, "error"), "too_many_streams");
  EXPECT_EQ(field(r.body, "scope"), "user");
  ASSERT_TRUE(header(r, "retry-after"));
  expect_complete_json(r);
  // another user is still admitted; once a stream of user-1 ends, user-1 is admitted again
  auto other = h.connect("room", "bob", "", "user-2");
  a->close();
  for (int i = 0; i < 100; ++i) {
    try {
      auto again = h.connect("room", "alice-4", "", "user-1");
      sw::test::expect_message(*again, "connected");
      return;
    } catch (const sw::net::upgrade_rejected&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  FAIL() << "user-1 was not admitted again after closing a stream";
}

// A page reload: the old stream's socket is gone but its upstream still drains (its last finals); the new stream
// of the same user is admitted at once, not after the drain.
TEST(Upgrade, AStreamThatOnlyDrainsItsUpstreamDoesNotCountAgainstItsUser) {
  sw::test::echo_options slow;
  slow.drain = std::chrono::milliseconds(5000);
  harness h([](sw::config& c) { c.max_streams_per_user = 1; }, sw::test::echo_provider(slow));
  auto a = h.connect("room", "alice", "", "user-1");
  sw::test::expect_message(*a, "ready");
  EXPECT_EQ(rejection(h.ws(harness::token("room", "alice", "user-1"))).status, 429u) << "the limit holds";
  a->close();
  std::unique_ptr<sw::net::ws_client> again;
  EXPECT_TRUE(sw::test::eventually(
      [&] {
        try {
          again = h.connect("room", "alice", "", "user-1");
          return true;
        } catch (const sw::net::upgrade_rejected&) {
          return false;
        }
      },
      std::chrono::milliseconds(2500)))
      << "the reload waited for the old stream's drain";
  if (again) sw::test::expect_message(*again, "connected");
  // The old stream's drain ends before the service does: one still draining at its shutdown bound is left to a
  // thread the process does not wait for, which can outlive OpenSSL's cleanup at exit and leave its per-thread error
  // state to LeakSanitizer (904 bytes, once in CI under ASan).
  EXPECT_TRUE(sw::test::eventually(
      [&] {
        auto m = sw::net::http_fetch(h.http("/metrics")).body;
        return field(m, "actors").find("\"session\":{\"live\":1,") != std::string::npos;
      },
      std::chrono::seconds(10)));
}

TEST(Upgrade, PerRoomLimitIs429) {
  harness h([](sw::config& c) { c.max_streams_per_room = 1; });
  auto a = h.connect("room", "alice");
  sw::test::expect_message(*a, "connected");
  auto r = rejection(h.ws(harness::token("room", "bob")));
  EXPECT_EQ(r.status, 429u);
  EXPECT_EQ(field(r.body, "scope"), "room");
  auto other_room = h.connect("room-2", "bob");
  EXPECT_TRUE(other_room->is_open());
}

TEST(Upgrade, ServerLimitIs429) {
  harness h([](sw::config& c) { c.max_streams = 1; });
  auto a = h.connect("room", "alice");
  sw::test::expect_message(*a, "connected");
  auto r = rejection(h.ws(harness::token("room-2", "bob")));
  EXPECT_EQ(r.status, 429u);
  EXPECT_EQ(field(r.body, "scope"), "server");
}

}  // namespace

namespace {

// A handshake Beast would refuse in its own words is refused like every other: complete JSON, CORS, closed.
TEST(Upgrade, ABadHandshakeIsACompleteJsonRefusal) {
  harness h;
  const std::string target = "/api/realtime/transcribe?token=" + harness::token("room", "alice");
  auto ask = [&](const std::string& key, const std::string& version) {
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    if (!key.empty()) req += "Sec-WebSocket-Key: " + key + "\r\n";
    req += "Sec-WebSocket-Version: " + version + "\r\n\r\n";
    return sw::net::raw_exchange("127.0.0.1", h.port, req, std::chrono::milliseconds(3000));
  };
  for (std::string key : {std::string(), std::string("short"), std::string("dGhlIHNhbXBsZSBub25jZQ"),
                          std::string("dGhlIHNhbXBsZSBub25jZQ=A"), std::string("dGhlIHNhbXBsZSBub25j*Q==")}) {
    auto raw = ask(key, "13");
    EXPECT_EQ(raw.rfind("HTTP/1.1 400", 0), 0u) << key << raw;
    EXPECT_NE(raw.find("bad_websocket_handshake"), std::string::npos) << raw;
    EXPECT_NE(raw.find("Access-Control-Allow-Origin: *"), std::string::npos) << raw;
    EXPECT_NE(raw.find("Connection: close"), std::string::npos) << raw;
  }
  auto old = ask("dGhlIHNhbXBsZSBub25jZQ==", "8");
  EXPECT_EQ(old.rfind("HTTP/1.1 426", 0), 0u) << old;
  EXPECT_NE(old.find("Sec-WebSocket-Version: 13"), std::string::npos) << old;
  EXPECT_NE(old.find("unsupported_websocket_version"), std::string::npos) << old;
  auto good = ask("dGhlIHNhbXBsZSBub25jZQ==", "13");
  EXPECT_EQ(good.rfind("HTTP/1.1 101", 0), 0u) << good;
}

}  // namespace

namespace {

// The server's answer to an upgrade request with `head_lines` (its Connection and key) and `extra` header lines: a
// 101's head (the connection stays open), or all of a refusal and "<end>" if the server then ended the connection.
std::string upgrade_answer_head(std::uint16_t port, const std::string& target, const std::string& extra,
                                const std::string& head_lines =
                                    "Connection: Upgrade\r\n"
                                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") {
  const int fd = sw::test::connect_loopback(port);
  if (fd < 0) return "connect failed";
  const std::string req = "GET " + target + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" + head_lines +
                          "Sec-WebSocket-Version: 13\r\n" + extra + "\r\n";
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string in;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  auto upgraded = [&] { return in.rfind("HTTP/1.1 101", 0) == 0 && in.find("\r\n\r\n") != std::string::npos; };
  while (std::chrono::steady_clock::now() < deadline && !upgraded()) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    char buf[4096];
    const auto n = ::recv(fd, buf, sizeof buf, 0);
    if (n == 0) in += "<end>";
    if (n <= 0) break;
    in.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return in;
}

// A client may ask for subprotocols (RFC 6455 §4.1); a browser that does fails the connection unless the 101 names
// one of them. Node's `ws`, which the old service ran, answers with the first it was offered, and so do we; a list
// that is not of distinct tokens is refused 400, as `ws` refuses it.
TEST(Upgrade, TheFirstSubprotocolOfferedIsAccepted) {
  harness h;
  const std::string target = "/api/realtime/transcribe?token=" + harness::token("room", "alice");
  auto accepted = [&](const std::string& extra) {
    auto head = upgrade_answer_head(h.port, target, extra);
    EXPECT_EQ(head.rfind("HTTP/1.1 101", 0), 0u) << extra << head;
    const auto at = head.find("Sec-WebSocket-Protocol: ");
    if (at == std::string::npos) return std::string("(none)");
    return head.substr(at + 24, head.find("\r\n", at) - at - 24);
  };
  EXPECT_EQ(accepted(""), "(none)");
  EXPECT_EQ(accepted("Sec-WebSocket-Protocol: chat\r\n"), "chat");
  EXPECT_EQ(accepted("Sec-WebSocket-Protocol: v2.sessions-ws ,\tchat\r\n"), "v2.sessions-ws");
  EXPECT_EQ(accepted("Sec-WebSocket-Protocol: one\r\nSec-WebSocket-Protocol: two, three\r\n"), "one");
  for (std::string bad : {"a,,b", "a, a", "one\r\nSec-WebSocket-Protocol: one", "a b", "a;b", ",", "a,", "\"a\""}) {
    auto head = upgrade_answer_head(h.port, target, "Sec-WebSocket-Protocol: " + bad + "\r\n");
    EXPECT_EQ(head.rfind("HTTP/1.1 400", 0), 0u) << bad << head;
    EXPECT_NE(head.find("bad_websocket_handshake"), std::string::npos) << bad << head;
  }
}

// Handshakes Node's `ws` took are taken: a Connection list in two lines (RFC 9110 §5.3; Node joins them, where
// Beast's check read the first line only and answered 426), and a key of 22 random base64 characters whose last one
// has bits past the 16th byte (`ws` checks only the alphabet and the "=="; the accept hashes the key as sent).
TEST(Upgrade, HandshakesNodesWsTookAreTaken) {
  harness h;
  const std::string target = "/api/realtime/transcribe?token=" + harness::token("room", "alice");
  const std::string key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
  for (std::string lines :
       {"Connection: keep-alive\r\nConnection: Upgrade\r\n" + key, "Connection:\r\nConnection: Upgrade\r\n" + key,
        "Connection: keep-alive\r\nConnection: foo, Upgrade\r\n" + key}) {
    auto head = upgrade_answer_head(h.port, target, "", lines);
    EXPECT_EQ(head.rfind("HTTP/1.1 101", 0), 0u) << lines << head;
  }
  for (std::string nonce : {"AAAAAAAAAAAAAAAAAAAAAR==", "dGhlIHNhbXBsZSBub25jZR==", "zzzzzzzzzzzzzzzzzzzzz/=="}) {
    auto head = upgrade_answer_head(h.port, target, "", "Connection: Upgrade\r\nSec-WebSocket-Key: " + nonce + "\r\n");
    EXPECT_EQ(head.rfind("HTTP/1.1 101", 0), 0u) << nonce << head;
    EXPECT_NE(head.find("Sec-WebSocket-Accept: " + sw::ws::accept_key(nonce) + "\r\n"), std::string::npos) << head;
  }
  // A Connection list in two lines that asks for no upgrade is a plain request (426 on this path), and a "close" in
  // its second line is heeded: the server ends the connection after its answer.
  auto plain = upgrade_answer_head(h.port, target, "", "Connection: keep-alive\r\nConnection: close\r\n" + key);
  EXPECT_EQ(plain.rfind("HTTP/1.1 426", 0), 0u) << plain;
  EXPECT_NE(plain.find("Connection: close\r\n"), std::string::npos) << plain;
  EXPECT_EQ(plain.substr(plain.size() - 5), "<end>") << plain;
}

}  // namespace
