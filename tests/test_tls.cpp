// TLS and plain on the same port, with a test CA generated at test time.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "actors/context.hpp"
#include "tests/support/harness.hpp"
#include "tests/support/pki.hpp"

namespace {

using sw::test::expect_message;
using sw::test::field;
using sw::test::harness;
using sw::test::test_pki;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// After `limit`, shuts the socket down both ways unless dismissed first: a blocking read waiting for a server that
// never answers then ends (Asio's blocking reads wait in poll(), which SO_RCVTIMEO does not bound).
class watchdog {
public:
  watchdog(int fd, std::chrono::seconds limit)
      : t_([this, fd, limit] {
          std::unique_lock<std::mutex> lock(mu_);
          if (!cv_.wait_for(lock, limit, [this] { return dismissed_; })) ::shutdown(fd, SHUT_RDWR);
        }) {}
  ~watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      dismissed_ = true;
    }
    cv_.notify_all();
    t_.join();
  }

private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool dismissed_ = false;
  std::thread t_;
};

// A blocking TLS connection of Asio's own (not our client code) to the harness, trusting the test CA; it is shut
// down after 10 s (a server that never answers fails the test, it does not hang it).
struct tls_connection {
  asio::io_context io;
  asio::ssl::context ctx{asio::ssl::context::tls_client};
  beast::ssl_stream<tcp::socket> stream{io, ctx};
  std::optional<watchdog> guard;

  tls_connection(std::uint16_t port, const std::string& ca_file) {
    ctx.load_verify_file(ca_file);
    stream.set_verify_mode(asio::ssl::verify_peer);
    SSL_set_tlsext_host_name(stream.native_handle(), "localhost");
    stream.next_layer().connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    guard.emplace(stream.next_layer().native_handle(), std::chrono::seconds(10));
    stream.handshake(asio::ssl::stream_base::client);
  }

  http::response<http::string_body> get(const std::string& target, bool keep_alive = true) {
    http::request<http::empty_body> req(http::verb::get, target, 11);
    req.set(http::field::host, "localhost");
    req.keep_alive(keep_alive);
    http::write(stream, req);
    http::response<http::string_body> res;
    http::read(stream, buffer, res);
    return res;
  }

  // What the next read finds: the server's close_notify is `eof`; a TCP end without it `stream_truncated`.
  beast::error_code next_read() {
    char c;
    beast::error_code ec;
    stream.read_some(asio::buffer(&c, 1), ec);
    return ec;
  }

  beast::flat_buffer buffer;
};

class Tls : public ::testing::Test {
protected:
  static void SetUpTestSuite() { pki = new test_pki(); }
  static void TearDownTestSuite() { delete pki; }
  void SetUp() override {
    ASSERT_TRUE(pki->ok) << "openssl could not create the test PKI";
    restart([](sw::config&) {});
    trusted.ca_file = pki->file("ca.pem");
  }
  // A new service with TLS and `tweak`'s settings.
  void restart(const std::function<void(sw::config&)>& tweak) {
    h.reset();
    h = std::make_unique<harness>([&](sw::config& c) {
      c.tls_cert_file = pki->file("server.pem");
      c.tls_key_file = pki->file("server.key");
      tweak(c);
    });
  }
  static test_pki* pki;
  std::unique_ptr<harness> h;
  sw::net::client_options trusted;
  std::string base(const char* scheme, const char* host = "localhost") const {
    return std::string(scheme) + "://" + host + ":" + std::to_string(h->port);
  }
};
test_pki* Tls::pki = nullptr;

TEST_F(Tls, HttpsAndPlainHttpOnTheSamePort) {
  auto secure = sw::net::http_fetch(base("https") + "/health", "GET", "", {}, trusted);
  EXPECT_EQ(secure.status, 200u);
  EXPECT_EQ(field(secure.body, "status"), "ok");
  auto plain = sw::net::http_fetch(base("http") + "/health");
  EXPECT_EQ(plain.status, 200u);
  auto by_ip = sw::net::http_fetch(base("https", "127.0.0.1") + "/", "GET", "", {}, trusted);
  EXPECT_EQ(by_ip.status, 200u);
}

TEST_F(Tls, WssAndWsOnTheSamePortShareARoom) {
  auto secure = sw::net::ws_client::connect(
      base("wss") + "/api/realtime/transcribe?token=" + harness::token("room", "alice"), trusted);
  auto plain =
      sw::net::ws_client::connect(base("ws") + "/api/realtime/transcribe?token=" + harness::token("room", "bob"));
  expect_message(*secure, "ready");
  expect_message(*plain, "ready");
  std::vector<std::uint8_t> f(640, 0);
  secure->send_binary(f.data(), f.size());
  EXPECT_EQ(field(expect_message(*plain, "transcript_final"), "speaker"), "alice");
  EXPECT_EQ(field(expect_message(*secure, "transcript_final"), "speaker"), "alice");
  secure->close();
}

TEST_F(Tls, UpgradeRejectionOverTlsIsAnHttpResponse) {
  try {
    sw::net::ws_client::connect(base("wss") + "/api/realtime/transcribe?token=bad", trusted);
    FAIL() << "accepted";
  } catch (const sw::net::upgrade_rejected& e) {
    EXPECT_EQ(e.status, 401u);
    EXPECT_EQ(field(e.body, "error"), "invalid_token");
  }
}

TEST_F(Tls, WrongCaFailsWithACertificateError) {
  sw::net::client_options wrong;
  wrong.ca_file = pki->file("other-ca.pem");
  try {
    sw::net::http_fetch(base("https") + "/health", "GET", "", {}, wrong);
    FAIL() << "an untrusted certificate was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("certificate verify failed"), std::string::npos) << e.what();
  }
  // the server counts the failed handshake and keeps serving
  auto ok = sw::net::http_fetch(base("https") + "/metrics", "GET", "", {}, trusted);
  EXPECT_NE(field(ok.body, "counters").find("\"net.tls_handshake_failures\":1"), std::string::npos) << ok.body;
}

TEST_F(Tls, HostNameIsVerified) {
  // The certificate names localhost and 127.0.0.1. A server on 127.0.0.2 presenting it must be refused by
  // host-name verification (the chain itself is trusted).
  harness other([](sw::config& c) {
    c.host = "127.0.0.2";
    c.tls_cert_file = pki->file("server.pem");
    c.tls_key_file = pki->file("server.key");
  });
  try {
    sw::net::http_fetch("https://127.0.0.2:" + std::to_string(other.port) + "/health", "GET", "", {}, trusted);
    FAIL() << "host name was not verified";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("certificate verify failed"), std::string::npos) << e.what();
  }
}

// One TLS connection: requests, then the upgrade on the same connection (the stream that served them becomes the
// WebSocket's), audio and transcripts over it, and the closing handshake ends with the server's close_notify.
TEST_F(Tls, RequestsThenAWebSocketOnOneConnectionEndWithTheServersCloseNotify) {
  tls_connection c(h->port, pki->file("ca.pem"));
  EXPECT_EQ(c.get("/health").result_int(), 200u);
  EXPECT_EQ(c.get("/health").result_int(), 200u);
  beast::websocket::stream<beast::ssl_stream<tcp::socket>&> ws(c.stream);
  ws.handshake("localhost", "/api/realtime/transcribe?token=" + harness::token("room", "alice"));
  auto read_text = [&](const std::string& needle) {
    for (int i = 0; i < 20; ++i) {
      beast::flat_buffer b;
      ws.read(b);
      auto text = beast::buffers_to_string(b.data());
      if (text.find(needle) != std::string::npos) return text;
    }
    return std::string();
  };
  EXPECT_NE(read_text("ready"), "");
  // a frame larger than a TLS record (16 KiB): read from several records, handed over whole
  std::vector<std::uint8_t> frame(40'000, 0);
  ws.binary(true);
  ws.write(asio::buffer(frame));
  EXPECT_EQ(field(read_text("transcript_final"), "speaker"), "alice");
  // Beast's close reads our close frame, then its teardown sends its close_notify and waits for ours: without it the
  // close fails (stream_truncated).
  beast::error_code ec;
  ws.close(beast::websocket::close_code::normal, ec);
  EXPECT_FALSE(ec) << ec.message();
  // The client's close_notify and its FIN, often together: the server finds the end at once, not at the close timer.
  c.stream.next_layer().close();
  EXPECT_TRUE(sw::test::eventually([&] { return h->svc->context().net->websockets.load() == 0; }, 2s));
}

// The client's close_notify and FIN in one segment, in answer to the server's (after the closing handshake, the
// server's close_notify and FIN go first): the read that takes the close_notify does not see the end, which raises no
// edge of its own after it. The server must still find it at once, not at WS_CLOSE_TIMEOUT_MS.
TEST_F(Tls, AClientsCloseNotifyWithItsFinEndsTheWebSocketAtOnce) {
  restart([](sw::config& c) { c.ws_close_timeout = 60s; });
  tls_connection c(h->port, pki->file("ca.pem"));
  beast::websocket::stream<beast::ssl_stream<tcp::socket>&> ws(c.stream);
  ws.handshake("localhost", "/api/realtime/transcribe?token=" + harness::token("room", "alice"));
  ASSERT_TRUE(sw::test::eventually([&] { return h->svc->context().net->websockets.load() == 1; }));
  // our close frame (1000, masked) by hand; then everything to the server's close_notify
  const std::uint8_t close_frame[] = {0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2};
  asio::write(c.stream, asio::buffer(close_frame));
  std::string got;
  beast::error_code ec;
  asio::read(c.stream, asio::dynamic_buffer(got), ec);
  EXPECT_EQ(ec, asio::error::eof) << ec.message();  // the server's close_notify
  ASSERT_GE(got.size(), 4u);
  EXPECT_EQ(static_cast<std::uint8_t>(got[got.size() - 4]), 0x88);  // its close frame, last: 1000
  const int fd = c.stream.next_layer().native_handle();
  const int cork = 1;  // our close_notify waits in our kernel and leaves with the FIN
  ::setsockopt(fd, IPPROTO_TCP, TCP_CORK, &cork, sizeof cork);
  c.stream.shutdown(ec);
  ::shutdown(fd, SHUT_WR);
  EXPECT_TRUE(sw::test::eventually([&] { return h->svc->context().net->websockets.load() == 0; }, 2s));
}

// Over TLS as over plain TCP (WebSocket.MessagesSentWithTheUpgradeRequestAreRead): a message the client sent behind
// its upgrade request, before our answer, is read. Here both are in one TLS record.
TEST_F(Tls, AMessageSentWithTheUpgradeRequestIsRead) {
  tls_connection c(h->port, pki->file("ca.pem"));
  std::string bytes = "GET /api/realtime/transcribe?token=" + harness::token("room", "alice") +
                      " HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  const std::string ping = R"({"type":"ping"})";
  const char key[4] = {1, 2, 3, 4};
  bytes += static_cast<char>(0x81);
  bytes += static_cast<char>(0x80 | ping.size());
  bytes.append(key, 4);
  for (std::size_t i = 0; i < ping.size(); ++i) bytes += static_cast<char>(ping[i] ^ key[i % 4]);
  asio::write(c.stream, asio::buffer(bytes));
  std::string got;
  while (got.find("pong") == std::string::npos) {
    char buf[4096];
    beast::error_code ec;
    const auto n = c.stream.read_some(asio::buffer(buf), ec);
    if (ec) break;
    got.append(buf, n);
  }
  EXPECT_EQ(got.rfind("HTTP/1.1 101", 0), 0u);
  EXPECT_NE(got.find(R"("type":"pong")"), std::string::npos) << got;
}

// A request that asks to close gets its answer, then the server's close_notify and FIN: the client can tell that
// the answer is whole (RFC 8446 §6.1), not cut.
TEST_F(Tls, ARequestThatClosesTheConnectionIsFollowedByCloseNotify) {
  tls_connection c(h->port, pki->file("ca.pem"));
  auto res = c.get("/health", false);
  EXPECT_EQ(res.result_int(), 200u);
  EXPECT_EQ(c.next_read(), asio::error::eof);
}

// The HTTP timeouts hold over TLS too: an idle keep-alive connection is closed after HTTP_IDLE_TIMEOUT_MS.
TEST_F(Tls, AnIdleKeepAliveConnectionIsClosed) {
  restart([](sw::config& c) { c.http_idle_timeout = std::chrono::milliseconds(200); });
  tls_connection c(h->port, pki->file("ca.pem"));
  EXPECT_EQ(c.get("/health").result_int(), 200u);
  const auto start = std::chrono::steady_clock::now();
  const auto ec = c.next_read();
  EXPECT_TRUE(ec == asio::ssl::error::stream_truncated || ec == asio::error::eof) << ec.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(3000));
}

// A ClientHello that never completes (its record announces more than comes) is cut at HTTP_REQUEST_TIMEOUT_MS, and
// the log says why.
TEST_F(Tls, AStalledHandshakeIsCutAtTheRequestTimeout) {
  restart([](sw::config& c) { c.http_request_timeout = std::chrono::milliseconds(300); });
  auto log = sw::test::capture_log(*h);
  asio::io_context io;
  tcp::socket s(io);
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), h->port));
  watchdog guard(s.native_handle(), std::chrono::seconds(10));
  // a handshake record of 512 bytes, a ClientHello of 508, of which only the first bytes come
  const std::uint8_t start_of_hello[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03};
  asio::write(s, asio::buffer(start_of_hello));
  const auto start = std::chrono::steady_clock::now();
  char c;
  beast::error_code ec;
  s.read_some(asio::buffer(&c, 1), ec);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(3000));
  EXPECT_TRUE(sw::test::eventually([&] { return sw::test::metric(*h, "net.tls_handshake_failures") == 1; }));
  EXPECT_NE(log->all().find("no handshake within HTTP_REQUEST_TIMEOUT_MS"), std::string::npos) << log->all();
}

// A renewed certificate (here from another CA, so that clients can tell which one they got) is loaded again while the
// service runs: new connections get it, an open stream keeps its connection and goes on. Files that do not load are
// refused, counted and logged, and the pair in use serves on.
TEST_F(Tls, AReloadedCertificateServesNewConnectionsWhileOpenOnesGoOn) {
  namespace fs = std::filesystem;
  const fs::path dir = pki->dir / ("reload-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()));
  fs::create_directories(dir);
  const auto cert = (dir / "cert.pem").string(), key = (dir / "key.pem").string();
  auto install = [&](const char* c, const char* k) {
    fs::copy_file(pki->file(c), cert, fs::copy_options::overwrite_existing);
    fs::copy_file(pki->file(k), key, fs::copy_options::overwrite_existing);
  };
  install("server.pem", "server.key");
  restart([&](sw::config& c) {
    c.tls_cert_file = cert;
    c.tls_key_file = key;
  });
  auto log = sw::test::capture_log(*h);
  sw::net::client_options renewed;
  renewed.ca_file = pki->file("other-ca.pem");
  auto open = sw::net::ws_client::connect(
      base("wss") + "/api/realtime/transcribe?token=" + harness::token("room", "alice"), trusted);
  expect_message(*open, "ready");

  install("server2.pem", "server2.key");
  ASSERT_TRUE(h->svc->reload_tls());
  EXPECT_EQ(sw::net::http_fetch(base("https") + "/health", "GET", "", {}, renewed).status, 200u);
  EXPECT_THROW(sw::net::http_fetch(base("https") + "/health", "GET", "", {}, trusted), std::runtime_error);
  std::vector<std::uint8_t> f(640, 0);
  open->send_binary(f.data(), f.size());
  EXPECT_EQ(field(expect_message(*open, "transcript_final"), "speaker"), "alice");

  // a key that is not the certificate's, then one that is no key at all: refused, the renewed pair serves on
  install("server.pem", "server2.key");
  EXPECT_THROW(h->svc->reload_tls(), std::runtime_error);
  std::ofstream(key, std::ios::trunc) << "not a key\n";
  try {
    h->svc->reload_tls();
    FAIL() << "a broken key was loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
  }
  EXPECT_EQ(sw::net::http_fetch(base("https") + "/health", "GET", "", {}, renewed).status, 200u);
  const auto metrics = sw::net::http_fetch(base("https") + "/metrics", "GET", "", {}, renewed).body;
  EXPECT_NE(metrics.find("\"net.tls_reloads\":1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("\"net.tls_reload_failures\":2"), std::string::npos) << metrics;
  EXPECT_NE(log->all().find("cannot load TLS certificate/key"), std::string::npos) << log->all();
  open->close();
}

TEST(TlsConfig, AReloadWithoutTlsDoesNothing) {
  harness h;
  EXPECT_FALSE(h.svc->reload_tls());
  EXPECT_FALSE(h.svc->tls());
}

// What start() says with these files (empty: it started).
std::string start_error(const std::string& cert, const std::string& key) {
  sw::config c;
  c.host = "127.0.0.1";
  c.port = 0;
  c.jwt_secret = "x";
  c.tls_cert_file = cert;
  c.tls_key_file = key;
  sw::service s(c);
  try {
    s.start();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return {};
}

// An EC key beside an RSA certificate loads without complaint from OpenSSL into a slot of its own; every handshake
// would then fail. The start refuses it.
TEST(TlsConfig, AKeyThatIsNotTheCertificatesIsAClearStartError) {
  test_pki pki;
  ASSERT_TRUE(pki.ok);
  const auto e = start_error(pki.file("server.pem"), pki.file("server2.key"));
  EXPECT_NE(e.find("the key is not the certificate's"), std::string::npos) << "started, or: " << e;
}

TEST(TlsConfig, MissingCertificateIsAClearStartError) {
  const auto e = start_error("/nonexistent/cert.pem", "/nonexistent/key.pem");
  EXPECT_NE(e.find("/nonexistent/cert.pem"), std::string::npos) << "started, or: " << e;
}

}  // namespace
