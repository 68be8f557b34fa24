// Every HTTP route and error of the client protocol, against the real server over real sockets.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <mutex>

#include <gtest/gtest.h>

#include "actors/context.hpp"
#include "proto/json.hpp"
#include "tests/support/harness.hpp"

namespace {

using sw::net::http_fetch;
using sw::test::field;
using sw::test::harness;

void expect_cors(const sw::net::http_result& r, const std::string& origin = "*") {
  ASSERT_TRUE(r.header("access-control-allow-origin"));
  EXPECT_EQ(*r.header("access-control-allow-origin"), origin);
  ASSERT_TRUE(r.header("access-control-allow-methods"));
  EXPECT_EQ(*r.header("access-control-allow-methods"), "GET, POST, OPTIONS");
  ASSERT_TRUE(r.header("access-control-allow-headers"));
  EXPECT_EQ(*r.header("access-control-allow-headers"), "Content-Type, Authorization");
}

class Http : public ::testing::Test {
protected:
  harness h;
};

// The browser page and its files: each with its content type, a policy that keeps the page to this origin, no
// sniffing, and revalidation by ETag (304 without a body or a length when unchanged); HEAD like GET without the body;
// other methods 405.
TEST_F(Http, TheDemoPageIsServedWithItsPoliciesAndRevalidatedByETag) {
  const std::pair<const char*, const char*> files[] = {{"/demo", "text/html; charset=utf-8"},
                                                       {"/demo/demo.js", "text/javascript; charset=utf-8"},
                                                       {"/demo/worklet.js", "text/javascript; charset=utf-8"},
                                                       {"/demo/demo.css", "text/css; charset=utf-8"}};
  for (auto [path, type] : files) {
    SCOPED_TRACE(path);
    auto r = http_fetch(h.http(path));
    ASSERT_EQ(r.status, 200u);
    EXPECT_EQ(*r.header("content-type"), type);
    EXPECT_FALSE(r.body.empty());
    ASSERT_TRUE(r.header("content-security-policy"));
    EXPECT_NE(r.header("content-security-policy")->find("default-src 'none'"), std::string::npos);
    EXPECT_NE(r.header("content-security-policy")->find("connect-src 'self'"), std::string::npos);
    EXPECT_NE(r.header("content-security-policy")->find("frame-ancestors 'none'"), std::string::npos);
    EXPECT_EQ(*r.header("x-content-type-options"), "nosniff");
    EXPECT_EQ(*r.header("cache-control"), "no-cache");
    ASSERT_TRUE(r.header("etag"));
    const std::string etag = *r.header("etag");
    EXPECT_EQ(etag.front(), '"');

    auto again = http_fetch(h.http(path), "GET", {}, {{"If-None-Match", etag}});
    EXPECT_EQ(again.status, 304u);
    EXPECT_TRUE(again.body.empty());
    EXPECT_FALSE(again.header("content-length"));
    EXPECT_EQ(*again.header("etag"), etag);
    EXPECT_EQ(http_fetch(h.http(path), "GET", {}, {{"If-None-Match", "\"other\""}}).status, 200u);

    auto head = http_fetch(h.http(path), "HEAD");
    EXPECT_EQ(head.status, 200u);
    EXPECT_TRUE(head.body.empty());
    EXPECT_EQ(*head.header("content-length"), std::to_string(r.body.size()));
    EXPECT_EQ(http_fetch(h.http(path), "POST", "{}").status, 405u);
  }
  auto page = http_fetch(h.http("/demo")).body;
  EXPECT_NE(page.find("/demo/demo.js"), std::string::npos);
  EXPECT_EQ(page.find("<script>"), std::string::npos) << "no inline script: the policy would refuse it";
  EXPECT_EQ(http_fetch(h.http("/demo/missing.js")).status, 404u);
}

// X-Forwarded-For names the client in the logs only when the connection comes from a TRUSTED_PROXIES address (as
// HAProxy appends it: the last entry); from anyone else it is ignored, so a client cannot put words in the log.
// Through a blocking socket: the upgrade (with X-Forwarded-For), then, once the answer is in, `after` (if any);
// returns everything read until the server closes.
std::string upgrade_then(std::uint16_t port, const std::string& token, const std::string& after) {
  const int fd = sw::test::connect_loopback(port);
  std::string answer;
  if (fd >= 0) {
    timeval tv{3, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const std::string upgrade = "GET /api/realtime/transcribe?token=" + token +
                                " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                                "X-Forwarded-For: 198.51.100.1, 203.0.113.7\r\n\r\n";
    ::send(fd, upgrade.data(), upgrade.size(), MSG_NOSIGNAL);
    char buf[4096];
    bool sent = after.empty();
    for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) {
      answer.append(buf, static_cast<std::size_t>(n));
      if (!sent && answer.find("\r\n\r\n") != std::string::npos) {
        ::send(fd, after.data(), after.size(), MSG_NOSIGNAL);
        sent = true;
      }
    }
    ::close(fd);
  }
  return answer;
}

// X-Forwarded-For names the client in the logs only when the connection comes from a TRUSTED_PROXIES address (as
// HAProxy appends it: the last entry); from anyone else it is ignored, so a client cannot put words in the log. The
// WebSocket's own log lines (here: a close code above 4999, refused 1002) name the client the same way.
TEST(HttpProxies, ForwardedForIsLoggedOnlyFromATrustedProxy) {
  auto logged = [](const std::vector<std::string>& trusted) {
    harness h([&](sw::config& c) { c.trusted_proxies = trusted; });
    auto log = sw::test::capture_log(h);
    auto refused = upgrade_then(h.port, "bad", {});
    EXPECT_EQ(refused.rfind("HTTP/1.1 401", 0), 0u) << refused;
    // A masked close frame with code 5000: the server answers 1002 and logs the client.
    const std::string close_5000 = {'\x88', '\x82', 0, 0, 0, 0, '\x13', '\x88'};
    auto upgraded = upgrade_then(h.port, harness::token("room", "alice"), close_5000);
    EXPECT_EQ(upgraded.rfind("HTTP/1.1 101", 0), 0u) << upgraded;
    return log->all();  // both lines are written before the server answers
  };
  auto trusted = logged({"10.0.0.0/8", "127.0.0.0/8"});
  EXPECT_NE(trusted.find("upgrade refused from 203.0.113.7 via 127.0.0.1:"), std::string::npos) << trusted;
  EXPECT_NE(trusted.find("client 203.0.113.7 via 127.0.0.1:"), std::string::npos) << trusted;
  EXPECT_NE(trusted.find("a close frame with an invalid code (5000)"), std::string::npos) << trusted;
  auto untrusted = logged({"10.0.0.0/8", "::1"});
  EXPECT_NE(untrusted.find("upgrade refused from 127.0.0.1:"), std::string::npos) << untrusted;
  EXPECT_NE(untrusted.find("client 127.0.0.1:"), std::string::npos) << untrusted;
  EXPECT_EQ(untrusted.find("203.0.113.7"), std::string::npos) << untrusted;
}

TEST_F(Http, Root) {
  auto r = http_fetch(h.http("/"));
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(*r.header("content-type"), "application/json");
  EXPECT_EQ(field(r.body, "service"), "sessions-ws");
  EXPECT_EQ(field(r.body, "status"), "running");
  EXPECT_NE(field(r.body, "version"), "<missing>");
  EXPECT_NE(field(r.body, "endpoints").find("/api/realtime/transcribe"), std::string::npos);
  EXPECT_NE(field(r.body, "timestamp").find('T'), std::string::npos);
  expect_cors(r);
}

TEST_F(Http, Health) {
  auto r = http_fetch(h.http("/health"));
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(field(r.body, "status"), "ok");
  EXPECT_EQ(field(r.body, "queueLength"), "0");
  EXPECT_EQ(field(r.body, "timestamp").back(), 'Z');
}

TEST_F(Http, HealthWithQueryString) {
  EXPECT_EQ(http_fetch(h.http("/health?probe=1")).status, 200u);
}

TEST_F(Http, ReadyReportsDatabaseAndStt) {
  auto r = http_fetch(h.http("/ready"));
  EXPECT_EQ(r.status, 200u) << r.body;
  EXPECT_EQ(field(r.body, "status"), "ready");
  EXPECT_EQ(field(r.body, "checks"),
            R"({"database":{"ok":true,"backend":"sqlite"},"persistence":{"ok":true,"queueLength":0,"usagePending":0,)"
            R"("parked":0},"stt":{"ok":true,"provider":"echo"}})");
}

TEST(HttpConfig, ReadyIsNotReadyWithoutPersistenceOrProvider) {
  harness h([](sw::config& c) { c.persistence = false; }, std::nullopt);
  auto r = http_fetch(h.http("/ready"));
  EXPECT_EQ(r.status, 503u);
  EXPECT_EQ(field(r.body, "status"), "not_ready");
  EXPECT_NE(field(r.body, "checks").find("\"provider\":\"none\""), std::string::npos) << r.body;
}

TEST_F(Http, MetricsJson) {
  auto r = http_fetch(h.http("/metrics"));
  EXPECT_EQ(r.status, 200u);
  for (auto key :
       {"activeConnections", "activeGladiaBridges", "activeSttRelays", "totalMessagesReceived", "totalMessagesSent",
        "totalErrors", "uptime", "queue", "latency", "counters", "sessionClients", "actors"})
    EXPECT_NE(field(r.body, key), "<missing>") << key;
  EXPECT_NE(field(r.body, "queue").find("totalFlushed"), std::string::npos);
  EXPECT_NE(field(r.body, "actors").find("\"gateway\""), std::string::npos);
}

TEST_F(Http, MetricsPrometheus) {
  for (auto r : {http_fetch(h.http("/metrics?format=prometheus")),
                 http_fetch(h.http("/metrics"), "GET", "", {{"Accept", "text/plain"}})}) {
    EXPECT_EQ(r.status, 200u);
    EXPECT_EQ(r.header("content-type")->rfind("text/plain; version=0.0.4", 0), 0u);
    EXPECT_NE(r.body.find("# TYPE sessions_ws_active_connections gauge"), std::string::npos);
    EXPECT_NE(r.body.find("sessions_ws_actors_live{kind=\"gateway\"} 1"), std::string::npos) << r.body;
  }
}

// Room names come from clients: Prometheus gets no series per room, only aggregates (the JSON has the rooms).
TEST_F(Http, PrometheusHasNoLabelMadeOfClientInput) {
  auto c = h.connect("room-named-by-a-client-4711", "alice");
  sw::test::expect_message(*c, "ready");
  auto r = http_fetch(h.http("/metrics?format=prometheus"));
  EXPECT_EQ(r.body.find("room-named-by-a-client-4711"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("sessions_ws_rooms 1\n"), std::string::npos) << r.body;
  EXPECT_NE(r.body.find("sessions_ws_room_streams_max 1\n"), std::string::npos) << r.body;
  EXPECT_NE(http_fetch(h.http("/metrics")).body.find("room-named-by-a-client-4711"), std::string::npos);
}

// /health and /ready are polled by load balancers: the database is asked at most about once a second.
TEST_F(Http, HealthDoesNotAskTheDatabaseOnEveryCall) {
  auto db_calls = [&] {
    return std::stoll(field(field(field(http_fetch(h.http("/metrics")).body, "actors"), "database"), "processed"));
  };
  ASSERT_TRUE(sw::test::eventually([&] { return db_calls() >= 1; }));
  const auto before = db_calls();
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 50; ++i) EXPECT_EQ(http_fetch(h.http(i % 2 ? "/health" : "/ready")).status, 200u);
  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  EXPECT_LE(db_calls() - before, static_cast<long long>(seconds) + 2) << "over " << seconds << " s";
}

TEST_F(Http, OptionsOnAnyPathIs204) {
  for (auto path : {"/", "/nowhere", "/api/realtime/transcribe", "/api/active-speaker"}) {
    auto r = http_fetch(h.http(path), "OPTIONS");
    EXPECT_EQ(r.status, 204u) << path;
    EXPECT_TRUE(r.body.empty());
    expect_cors(r);
  }
}

TEST_F(Http, UnknownPathIs404WithPathAndMethod) {
  auto r = http_fetch(h.http("/no/such?x=1"), "DELETE");
  EXPECT_EQ(r.status, 404u);
  EXPECT_EQ(field(r.body, "error"), "Not found");
  EXPECT_EQ(field(r.body, "path"), "/no/such");
  EXPECT_EQ(field(r.body, "method"), "DELETE");
  expect_cors(r);
}

TEST_F(Http, WrongMethodIs405WithAllow) {
  auto r = http_fetch(h.http("/health"), "POST", "{}");
  EXPECT_EQ(r.status, 405u);
  ASSERT_TRUE(r.header("allow"));
  EXPECT_EQ(*r.header("allow"), "GET, OPTIONS");
  r = http_fetch(h.http("/api/active-speaker"));
  EXPECT_EQ(r.status, 405u);
  EXPECT_EQ(*r.header("allow"), "POST, OPTIONS");
}

// A bare TCP connection to the harness, as a client that writes a request in steps would use it.
class raw_connection {
public:
  explicit raw_connection(std::uint16_t port) : fd_(sw::test::connect_loopback(port)) {
    connected_ = fd_ >= 0;
    timeval tv{5, 0};
    if (connected_) ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~raw_connection() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return connected_; }
  // False when the connection failed (errno says how).
  bool send(const std::string& bytes) {
    for (std::size_t at = 0; at < bytes.size();) {
      const auto n = ::send(fd_, bytes.data() + at, bytes.size() - at, MSG_NOSIGNAL);
      if (n <= 0) return false;
      at += static_cast<std::size_t>(n);
    }
    return true;
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }
  // What the server sends until `needle` has come (up to it and what came with it), or until it closes or is silent
  // for 5 s.
  std::string read_until(const std::string& needle) {
    while (in_.find(needle) == std::string::npos) {
      char buf[4096];
      const auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      in_.append(buf, static_cast<std::size_t>(n));
    }
    const auto at = in_.find(needle);
    const auto end = at == std::string::npos ? in_.size() : at + needle.size();
    std::string out = in_.substr(0, end);
    in_.erase(0, end);
    return out;
  }

private:
  int fd_;
  bool connected_ = false;
  std::string in_;
};

// A client that asks for "100 Continue" before sending its body (curl's --header "Expect: 100-continue", or on its
// own for large bodies; it waits a second for the 100 otherwise) gets it at once, then the answer to the whole
// request; the connection serves on.
TEST_F(Http, AClientThatExpects100ContinueGetsItBeforeItSendsItsBody) {
  raw_connection c(h.port);
  ASSERT_TRUE(c.connected());
  const std::string body = R"({"sessionSlug":"room"})";
  c.send(
      "POST /api/active-speaker HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n");
  EXPECT_EQ(c.read_until("\r\n\r\n"), "HTTP/1.1 100 Continue\r\n\r\n");
  c.send(body);
  auto answer = c.read_until("}");
  EXPECT_EQ(answer.rfind("HTTP/1.1 400 ", 0), 0u) << answer;
  EXPECT_NE(answer.find("Missing required fields"), std::string::npos) << answer;
  c.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(c.read_until("\r\n").rfind("HTTP/1.1 200 ", 0), 0u);
}

// A body over the limit is refused before it is sent (no "100 Continue"); an expectation other than 100-continue is
// refused 417 (as Node does); an HTTP/1.0 client is never sent an interim answer.
TEST_F(Http, ExpectationsTheServerWillNotMeetAreAnsweredAtOnce) {
  {
    raw_connection c(h.port);
    c.send("POST /api/active-speaker HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1000000\r\n\r\n");
    auto answer = c.read_until("}");
    EXPECT_EQ(answer.rfind("HTTP/1.1 413 ", 0), 0u) << answer;
  }
  {
    raw_connection c(h.port);
    c.send("POST /api/active-speaker HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n");
    auto answer = c.read_until("}");
    EXPECT_EQ(answer.rfind("HTTP/1.1 417 ", 0), 0u) << answer;
    EXPECT_NE(answer.find(R"({"error":"expectation_failed"})"), std::string::npos) << answer;
    EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  }
  {
    raw_connection c(h.port);
    c.send("POST /api/active-speaker HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}");
    auto answer = c.read_until("}");
    EXPECT_EQ(answer.rfind("HTTP/1.0 400 ", 0), 0u) << answer;
  }
}

// A client still sending the body of a request refused from its head gets the answer, and can finish sending: the
// server reads and drops what comes until the client's end (within WS_CLOSE_TIMEOUT_MS). Closed at once, the socket
// would reset the connection, and the client's next write would fail ("broken pipe": curl then reports that, not the
// 413, one time in three here).
TEST_F(Http, AClientStillSendingARefusedBodyCanFinishAndIsNotReset) {
  raw_connection c(h.port);
  ASSERT_TRUE(c.send("POST /api/active-speaker HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n"));
  auto answer = c.read_until("}");
  EXPECT_EQ(answer.rfind("HTTP/1.1 413 ", 0), 0u) << answer;
  EXPECT_EQ(c.read_until("\n"), "") << "the server's end of its side follows its answer";
  const std::string piece(64 * 1024, 'x');
  for (int i = 0; i < 32; ++i) ASSERT_TRUE(c.send(piece)) << "piece " << i << ": " << std::strerror(errno);
  c.shutdown_write();
  // the server's side of the connection ends at the client's end, not at the close timer (5 s)
  EXPECT_TRUE(
      sw::test::eventually([&] { return h.svc->context().net->connections.load() == 0; }, std::chrono::seconds(2)));
}

TEST_F(Http, BodyOver64KiBIs413) {
  auto r = http_fetch(h.http("/api/active-speaker"), "POST", std::string(64 * 1024 + 1, 'x'),
                      {{"Content-Type", "application/json"}});
  EXPECT_EQ(r.status, 413u);
  EXPECT_EQ(field(r.body, "error"), "payload_too_large");
  expect_cors(r);
  // exactly 64 KiB is read (and then rejected as invalid JSON, not as too large)
  r = http_fetch(h.http("/api/active-speaker"), "POST", std::string(64 * 1024, 'x'));
  EXPECT_EQ(r.status, 400u);
}

// A request's line and headers may take 16 KiB together; past that the answer says so (431, as Node gives), whether a
// header or the URL is long, and the connection closes.
TEST_F(Http, AHeadOver16KiBIs431) {
  auto r = http_fetch(h.http("/health"), "GET", "", {{"X-Padding", std::string(16 * 1024, 'x')}});
  EXPECT_EQ(r.status, 431u);
  EXPECT_EQ(field(r.body, "error"), "header_fields_too_large");
  ASSERT_TRUE(r.header("connection"));
  EXPECT_EQ(*r.header("connection"), "close");
  expect_cors(r);
  r = http_fetch(h.http("/health?pad=" + std::string(16 * 1024, 'x')));
  EXPECT_EQ(r.status, 431u);
  // under the limit, the same request is served
  EXPECT_EQ(http_fetch(h.http("/health"), "GET", "", {{"X-Padding", std::string(15 * 1024, 'x')}}).status, 200u);
  EXPECT_TRUE(sw::test::eventually([&] { return sw::test::metric(h, "net.bad_requests") == 2; }));
}

TEST_F(Http, WebSocketPathWithoutUpgradeIs426) {
  for (auto method : {"GET", "POST", "PUT"}) {
    auto r = http_fetch(h.http("/api/realtime/transcribe?token=x"), method);
    EXPECT_EQ(r.status, 426u) << method;
    EXPECT_EQ(field(r.body, "error"), "WebSocket endpoint. Use WebSocket upgrade.");
  }
}

TEST_F(Http, MalformedRequestIs400) {
  auto raw = sw::net::raw_exchange("127.0.0.1", h.port, "GET /health HTTP/1.1\r\nHost x\r\n\r\n",
                                   std::chrono::milliseconds(2000));
  EXPECT_EQ(raw.rfind("HTTP/1.1 400", 0), 0u) << raw;
  EXPECT_NE(raw.find("bad_request"), std::string::npos);
}

// RFC 7230 §3.3.3: a body whose framing is ambiguous is refused, and nothing behind it is answered (a smuggled
// request). HTTP/1.1 needs exactly one Host.
TEST_F(Http, AmbiguousFramingIs400AndNothingBehindItIsAnswered) {
  const std::string smuggled = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  for (std::string te :
       {"Transfer-Encoding: chunked, identity\r\n", "Transfer-Encoding: identity\r\n",
        "Transfer-Encoding: xchunked\r\n", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"}) {
    auto raw = sw::net::raw_exchange(
        "127.0.0.1", h.port, "POST /api/active-speaker HTTP/1.1\r\nHost: x\r\n" + te + "\r\n0\r\n\r\n" + smuggled,
        std::chrono::milliseconds(3000));
    EXPECT_EQ(raw.rfind("HTTP/1.1 400", 0), 0u) << te << raw;
    EXPECT_EQ(raw.find("HTTP/1.1", 1), std::string::npos) << "a second response: " << te << raw;
  }
  for (std::string head : {"GET /health HTTP/1.1\r\n\r\n", "GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"}) {
    auto raw = sw::net::raw_exchange("127.0.0.1", h.port, head, std::chrono::milliseconds(3000));
    EXPECT_EQ(raw.rfind("HTTP/1.1 400", 0), 0u) << head << raw;
  }
  auto ok = sw::net::raw_exchange("127.0.0.1", h.port,
                                  "POST /api/active-speaker HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n"
                                  "Connection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                                  std::chrono::milliseconds(3000));
  EXPECT_EQ(ok.rfind("HTTP/1.1 400", 0), 0u) << "well framed, but missing fields: " << ok;
  EXPECT_NE(ok.find("Missing required fields"), std::string::npos) << ok;
}

TEST_F(Http, ANotFoundBodyIsValidUtf8WhateverThePath) {
  auto r = http_fetch(h.http("/%ff%fe%c0%af"));
  EXPECT_EQ(r.status, 404u);
  EXPECT_EQ(sw::valid_utf8(r.body), r.body) << r.body;
  EXPECT_NE(field(r.body, "path").find("\xEF\xBF\xBD"), std::string::npos) << r.body;
}

// HEAD on every GET route (the headers, Content-Length included, and no body); OPTIONS *; absolute-form targets.
TEST_F(Http, HeadOptionsAsteriskAndAbsoluteFormTargets) {
  for (auto path : {"/", "/health", "/ready", "/metrics", "/nowhere"}) {
    auto raw = sw::net::raw_exchange("127.0.0.1", h.port,
                                     std::string("HEAD ") + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                     std::chrono::milliseconds(3000));
    auto get = http_fetch(h.http(path));
    EXPECT_EQ(raw.rfind("HTTP/1.1 " + std::to_string(get.status), 0), 0u) << path << raw;
    auto end = raw.find("\r\n\r\n");
    ASSERT_NE(end, std::string::npos) << raw;
    EXPECT_EQ(end + 4, raw.size()) << "a HEAD answer has no body: " << raw;
    EXPECT_NE(raw.find("Content-Length: "), std::string::npos) << raw;
    EXPECT_EQ(raw.find("Content-Length: 0\r\n"), std::string::npos) << raw;
  }
  auto options =
      sw::net::raw_exchange("127.0.0.1", h.port, "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                            std::chrono::milliseconds(3000));
  EXPECT_EQ(options.rfind("HTTP/1.1 204", 0), 0u) << options;
  auto absolute = sw::net::raw_exchange(
      "127.0.0.1", h.port, "GET http://127.0.0.1/health?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      std::chrono::milliseconds(3000));
  EXPECT_EQ(absolute.rfind("HTTP/1.1 200", 0), 0u) << absolute;
  EXPECT_NE(absolute.find("\"status\":\"ok\""), std::string::npos) << absolute;
}

TEST_F(Http, KeepAliveServesSeveralRequestsOnOneConnection) {
  auto raw = sw::net::raw_exchange("127.0.0.1", h.port,
                                   "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                                   "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                   std::chrono::milliseconds(2000));
  EXPECT_NE(raw.find("\"status\":\"ok\""), std::string::npos) << raw;
  EXPECT_NE(raw.find("\"service\":\"sessions-ws\""), std::string::npos) << raw;
}

TEST_F(Http, ActiveSpeakerValidation) {
  auto url = h.http("/api/active-speaker");
  auto r = http_fetch(url, "POST", "{nope");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(field(r.body, "error"), "invalid_json");
  r = http_fetch(url, "POST", R"({"sessionSlug":"r1","identity":"a"})");
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(field(r.body, "error"), "Missing required fields: sessionSlug, identity, token");
  r = http_fetch(url, "POST", R"({"sessionSlug":"r1","identity":"a","token":"garbage"})");
  EXPECT_EQ(r.status, 401u);
  EXPECT_EQ(field(r.body, "error"), "invalid_token");
  auto other_room = harness::token("r2", "a");
  r = http_fetch(url, "POST", R"({"sessionSlug":"r1","identity":"a","token":")" + other_room + "\"}");
  EXPECT_EQ(r.status, 403u);
  EXPECT_EQ(field(r.body, "error"), "session_mismatch");
  auto tok = harness::token("r1", "a");
  r = http_fetch(url, "POST", R"({"sessionSlug":"r1","identity":"a","name":"A","token":")" + tok + "\"}");
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(r.body, R"({"success":true})");
}

TEST_F(Http, TranscriptionRoutesNeedTheServiceSecret) {
  for (auto path : {"/api/transcription/start", "/api/transcription/stop"}) {
    auto r = http_fetch(h.http(path), "POST", R"({"sessionId":"s","sessionSlug":"r"})");
    EXPECT_EQ(r.status, 401u) << path;
    r = http_fetch(h.http(path), "POST", R"({"sessionId":"s","sessionSlug":"r"})",
                   {{"Authorization", "Bearer wrong-secret"}});
    EXPECT_EQ(r.status, 401u) << path;
  }
  sw::header_list auth{{"Authorization", "Bearer service-secret"}};
  auto r = http_fetch(h.http("/api/transcription/start"), "POST", R"({"sessionId":"s"})", auth);
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(field(r.body, "error"), "Missing sessionId or sessionSlug");
  r = http_fetch(h.http("/api/transcription/start"), "POST", R"({"sessionId":"s","sessionSlug":"r"})", auth);
  EXPECT_EQ(r.status, 503u);
  EXPECT_EQ(field(r.body, "error"), "livekit_not_configured");
  r = http_fetch(h.http("/api/transcription/stop"), "POST", "{}", auth);
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(field(r.body, "error"), "Missing sessionId");
}

TEST(HttpConfig, CorsOriginIsConfigurable) {
  harness h([](sw::config& c) { c.cors_allow_origin = "https://app.example"; });
  expect_cors(http_fetch(h.http("/health")), "https://app.example");
  expect_cors(http_fetch(h.http("/nope")), "https://app.example");
}

TEST(HttpConfig, IdleKeepAliveConnectionsAreClosed) {
  harness h([](sw::config& c) { c.http_idle_timeout = std::chrono::milliseconds(200); });
  auto start = std::chrono::steady_clock::now();
  // raw_exchange reads until the server closes: the idle timeout must end it well before 5 s
  auto raw = sw::net::raw_exchange("127.0.0.1", h.port, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
                                   std::chrono::milliseconds(5000));
  EXPECT_NE(raw.find("200 OK"), std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(3000));
}

TEST(HttpConfig, SilentConnectionIsClosedAfterTheRequestTimeout) {
  harness h([](sw::config& c) { c.http_request_timeout = std::chrono::milliseconds(200); });
  auto start = std::chrono::steady_clock::now();
  auto raw = sw::net::raw_exchange("127.0.0.1", h.port, "", std::chrono::milliseconds(5000));
  EXPECT_TRUE(raw.empty());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(3000));
}

// A client that sends part of a request and no more is told 408 when the time for it runs out (RFC 9110 §15.5.9, as
// Node answers), then the connection closes: a head cut short, a body cut short, and the second request of a
// keep-alive connection cut short (after the first was answered). One that sends nothing is closed without a word
// (SilentConnectionIsClosedAfterTheRequestTimeout).
TEST(HttpConfig, ARequestThatStopsHalfwayIsAnswered408) {
  harness h([](sw::config& c) {
    c.http_request_timeout = std::chrono::milliseconds(300);
    c.http_idle_timeout = std::chrono::milliseconds(300);
  });
  auto log = sw::test::capture_log(h);
  for (const std::string partial : {"GET /health HTTP/1.1\r\nHost: x\r\n",
                                    "POST /api/active-speaker HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"a\"",
                                    "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /hea"}) {
    const auto start = std::chrono::steady_clock::now();
    // raw_exchange reads until the server closes
    auto raw = sw::net::raw_exchange("127.0.0.1", h.port, partial, std::chrono::milliseconds(5000));
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(3000)) << partial;
    const auto at = raw.find("HTTP/1.1 408");
    ASSERT_NE(at, std::string::npos) << partial << raw;
    EXPECT_EQ(at == 0, partial.find("\r\n\r\nGET") == std::string::npos) << "the first request answered first";
    EXPECT_NE(raw.find("request_timeout", at), std::string::npos) << raw;
    EXPECT_NE(raw.find("Connection: close", at), std::string::npos) << raw;
  }
  EXPECT_EQ(sw::test::metric(h, "net.bad_requests"), 3);
  EXPECT_NE(log->all().find("no complete request within its timeout"), std::string::npos) << log->all();
}

}  // namespace

namespace {

// Out of file descriptors, the listener pauses instead of spinning on accept(), and serves again once
// descriptors are free.
TEST(HttpListener, OutOfDescriptorsPausesAcceptingInsteadOfSpinning) {
  harness h;
  ASSERT_EQ(http_fetch(h.http("/health")).status, 200u);
  // That request's connection holds a descriptor of the server's until the server has read its end: were it freed
  // after the table is filled below, the listener's next accept() would take it and the second EMFILE never come.
  auto& stats = *h.svc->context().net;
  ASSERT_TRUE(sw::test::eventually([&] { return stats.connections.load() == 0; }));
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit low = old;
  low.rlim_cur = std::min<rlim_t>(old.rlim_cur, 4096);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<int> filler;
  for (int fd; (fd = ::dup(0)) >= 0;) filler.push_back(fd);  // every descriptor taken
  ::close(filler.back());                                    // but one, for the client's socket
  filler.pop_back();
  int client = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(client, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(h.port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);  // in the backlog
  const std::string req = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(::send(client, req.data(), req.size(), 0), static_cast<ssize_t>(req.size()));
  // The listener meets EMFILE, pauses, and meets it again (no HTTP here: there is no descriptor to ask with).
  auto& failures = stats.accept_errors;
  const bool first = sw::test::eventually([&] { return failures.load() >= 1; });
  const auto t1 = std::chrono::steady_clock::now();
  const bool second = sw::test::eventually([&] {
    for (int fd; (fd = ::dup(0)) >= 0;) filler.push_back(fd);  // one freed elsewhere in the process is taken again
    return failures.load() >= 2;
  });
  const auto paused = std::chrono::steady_clock::now() - t1;
  for (int fd : filler) ::close(fd);
  ::setrlimit(RLIMIT_NOFILE, &old);
  // the connection waited in the backlog and is served now
  timeval tv{5, 0};
  ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  char buf[512];
  auto n = ::recv(client, buf, sizeof buf, 0);
  ::close(client);
  ASSERT_TRUE(first && second) << failures.load();
  EXPECT_GE(paused, std::chrono::milliseconds(80)) << "accept() was retried without a pause";
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<std::size_t>(n)).rfind("HTTP/1.1 200", 0), 0u);
}

// After a burst, the heap's free pages go back to the system (MEMORY_TRIM_INTERVAL_MS). Memory freed in the middle of
// the heap stays resident otherwise: glibc gives back only the top of a heap by itself. The heap's gauges follow.
TEST(MemoryTrim, FreedPagesInsideTheHeapLeaveTheResidentSet) {
  harness h([](sw::config& c) { c.memory_trim_interval = std::chrono::milliseconds(50); });
  if (sw::self_rss_anon_kib() < 0) GTEST_SKIP() << "the kernel does not report RssAnon";
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "under ASan, malloc is ASan's allocator: glibc's heap, which malloc_trim trims, is not used";
#endif
  // 2 000 blocks of 16 KiB, each followed by a small one that stays: freed, they are 32 MiB of holes in the heap.
  std::vector<void*> burst, kept;
  for (int i = 0; i < 2000; ++i) {
    burst.push_back(std::malloc(16 * 1024));
    std::memset(burst.back(), 1, 16 * 1024);
    kept.push_back(std::malloc(64));
  }
  const long high = sw::self_rss_anon_kib();
  const auto trimmed = sw::test::metric(h, "memory.trimmed_kib");
  // The heap's gauges, as of the last trim, count the burst while it is held and drop it once freed.
  constexpr long long burst_bytes = 2000LL * 16 * 1024;
  EXPECT_TRUE(sw::test::eventually([&] { return sw::test::metric(h, "memory.heap_in_use_bytes") >= burst_bytes; }));
  const auto in_use = sw::test::metric(h, "memory.heap_in_use_bytes");
  for (auto* p : burst) std::free(p);
  EXPECT_TRUE(sw::test::eventually([&] {
    return sw::test::metric(h, "memory.heap_in_use_bytes") < in_use - burst_bytes * 9 / 10;
  })) << sw::test::metric(h, "memory.heap_in_use_bytes")
      << " bytes in use, " << in_use << " with the burst";
  EXPECT_TRUE(sw::test::eventually([&] { return sw::self_rss_anon_kib() < high - 16 * 1024; }))
      << sw::self_rss_anon_kib() << " KiB resident, " << high << " before the burst was freed";
  EXPECT_GE(sw::test::metric(h, "memory.trimmed_kib") - trimmed, 16 * 1024);
  EXPECT_GE(sw::test::metric(h, "memory.trims"), 2);
  for (auto* p : kept) std::free(p);
}

}  // namespace
