// The upstream WebSocket (net/upstream.hpp over net/client_websocket.hpp) against real peers on loopback: Beast's
// server end, and raw sockets where a peer must misbehave. The handshake, the server's control frames, both ways of
// closing, a violation of the protocol, and bytes that come with the handshake's response.
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "net/upstream.hpp"
#include "tests/support/pki.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// One peer on a thread of its own: it accepts one connection and runs `serve` on it.
class peer {
public:
  explicit peer(std::function<void(tcp::socket&)> serve)
      : acc_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    thread_ = std::thread([this, serve = std::move(serve)] {
      tcp::socket s(io_);
      acc_.accept(s);
      serve(s);
    });
  }
  ~peer() { thread_.join(); }
  std::string url() const { return "ws://127.0.0.1:" + std::to_string(acc_.local_endpoint().port()) + "/v2/live"; }

private:
  asio::io_context io_;
  tcp::acceptor acc_;
  std::thread thread_;
};

// What the connection reported: its texts, and its one `closed`.
struct outcome {
  std::promise<void> opened_p;
  std::promise<std::pair<std::uint16_t, std::string>> closed_p;
  std::future<std::pair<std::uint16_t, std::string>> closed = closed_p.get_future();
  std::function<void(const std::string&)> on_text;
  sw::net::ws_events events() {
    sw::net::ws_events ev;
    ev.opened = [this] { opened_p.set_value(); };
    ev.text = [this](std::string t) {
      if (on_text) on_text(t);
    };
    ev.closed = [this](std::uint16_t code, std::string reason) { closed_p.set_value({code, std::move(reason)}); };
    return ev;
  }
  std::pair<std::uint16_t, std::string> wait_closed() {
    if (closed.wait_for(10s) != std::future_status::ready) return {0, "never closed"};
    return closed.get();
  }
};

sw::net::client_options quick() {
  sw::net::client_options o;
  o.timeout = 500ms;
  return o;
}

// The server pings and sends a message in fragments: the pong carries the ping's payload and goes out before what
// the client sends after it; the message arrives whole. The server's close is echoed and reported with its code.
TEST(UpstreamWebSocket, TheServersPingIsAnsweredAndItsCloseEchoed) {
  std::promise<std::string> pong;
  std::promise<std::string> server_got;
  std::promise<std::uint16_t> echo;
  peer p([&](tcp::socket& s) {
    websocket::stream<tcp::socket&> ws(s);
    ws.accept();
    std::string pong_payload;
    ws.control_callback([&](websocket::frame_type t, beast::string_view payload) {
      if (t == websocket::frame_type::pong) pong_payload = std::string(payload);
    });
    ws.ping("abc");
    ws.text(true);
    ws.write_some(false, asio::buffer(std::string("frag")));
    ws.write_some(false, asio::buffer(std::string("men")));
    ws.write_some(true, asio::buffer(std::string("ted")));
    beast::flat_buffer b;
    ws.read(b);
    pong.set_value(pong_payload);
    server_got.set_value(beast::buffers_to_string(b.data()));
    ws.close(websocket::close_reason(static_cast<websocket::close_code>(4001), "bye"));
    echo.set_value(static_cast<std::uint16_t>(ws.reason().code));
  });
  // The connection must go before the runtime it runs on (its timers belong to the runtime's context), and the text
  // is answered from this thread once the connection is in hand.
  outcome o;
  std::promise<std::string> text;
  o.on_text = [&](const std::string& t) { text.set_value(t); };
  sw::net::outbound out;
  auto conn = out.connect_ws(p.url(), quick(), o.events());
  auto t = text.get_future();
  ASSERT_EQ(t.wait_for(5s), std::future_status::ready);
  conn->send_text("got " + t.get());
  auto [code, reason] = o.wait_closed();
  EXPECT_EQ(code, 4001) << reason;
  EXPECT_EQ(reason, "bye");
  auto f = server_got.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(f.get(), "got fragmented");
  EXPECT_EQ(pong.get_future().get(), "abc");
  EXPECT_EQ(echo.get_future().get(), 4001) << "the echo carries the server's code";
}

// Our close: the server sees our code, answers, and `closed` reports its answer.
TEST(UpstreamWebSocket, OurCloseIsAnsweredAndTheAnswerReported) {
  std::promise<std::uint16_t> server_saw;
  peer p([&](tcp::socket& s) {
    websocket::stream<tcp::socket&> ws(s);
    ws.accept();
    beast::flat_buffer b;
    beast::error_code ec;
    ws.read(b, ec);  // our close: Beast answers it and completes the read with `closed`
    server_saw.set_value(ec == websocket::error::closed ? static_cast<std::uint16_t>(ws.reason().code) : 0);
  });
  outcome o;
  sw::net::outbound out;
  auto conn = out.connect_ws(p.url(), quick(), o.events());
  ASSERT_EQ(o.opened_p.get_future().wait_for(5s), std::future_status::ready);
  conn->close(1000);
  auto [code, reason] = o.wait_closed();
  EXPECT_EQ(code, 1000) << reason;
  EXPECT_EQ(server_saw.get_future().get(), 1000);
}

// A server that never answers our close is given up once the bound passes.
TEST(UpstreamWebSocket, AServerThatNeverAnswersOurCloseIsGivenUpAtTheBound) {
  std::promise<void> done;
  peer p([&](tcp::socket& s) {
    websocket::stream<tcp::socket&> ws(s);
    ws.accept();
    done.get_future().wait();  // reads nothing more
  });
  outcome o;
  sw::net::outbound out;
  auto conn = out.connect_ws(p.url(), quick(), o.events());
  ASSERT_EQ(o.opened_p.get_future().wait_for(5s), std::future_status::ready);
  const auto t0 = std::chrono::steady_clock::now();
  conn->close(1000);
  auto [code, reason] = o.wait_closed();
  const auto waited = std::chrono::steady_clock::now() - t0;
  done.set_value();
  EXPECT_EQ(code, 1006);
  EXPECT_NE(reason.find("no close frame"), std::string::npos) << reason;
  EXPECT_GE(waited, 400ms);
  EXPECT_LT(waited, 5s);
}

// A violation (here a masked frame: a server's are never masked) is answered with its close code, 1002, and
// reported as the end of the connection.
TEST(UpstreamWebSocket, AViolationOfTheProtocolIsAnsweredWithItsCode) {
  std::promise<std::uint16_t> server_saw;
  peer p([&](tcp::socket& s) {
    websocket::stream<tcp::socket&> ws(s);
    ws.accept();
    const std::string masked("\x81\x81\x01\x02\x03\x04\x60", 7);  // "a", masked
    asio::write(s, asio::buffer(masked));
    beast::flat_buffer b;
    beast::error_code ec;
    ws.read(b, ec);
    server_saw.set_value(ec == websocket::error::closed ? static_cast<std::uint16_t>(ws.reason().code) : 0);
  });
  outcome o;
  sw::net::outbound out;
  auto conn = out.connect_ws(p.url(), quick(), o.events());
  auto [code, reason] = o.wait_closed();
  EXPECT_EQ(code, 1006);
  EXPECT_NE(reason.find("broke the WebSocket protocol: a masked frame"), std::string::npos) << reason;
  EXPECT_EQ(server_saw.get_future().get(), 1002);
}

// A raw peer: reads the upgrade request, answers with `respond(key)`, then holds the connection until the client
// closes it.
std::function<void(tcp::socket&)> raw_upgrade(std::function<std::string(const std::string&)> respond) {
  return [respond = std::move(respond)](tcp::socket& s) {
    std::string req;
    asio::read_until(s, asio::dynamic_buffer(req), "\r\n\r\n");
    const auto at = req.find("Sec-WebSocket-Key: ");
    const auto key = at == std::string::npos ? std::string() : req.substr(at + 19, 24);
    asio::write(s, asio::buffer(respond(key)));
    char c;
    beast::error_code ec;
    s.read_some(asio::buffer(&c, 1), ec);
    while (!ec) s.read_some(asio::buffer(&c, 1), ec);
  };
}

std::string accept_for(const std::string& key) {  // Beast's own, for the lawful answer
  websocket::detail::sec_ws_accept_type a;
  websocket::detail::make_sec_ws_accept(a, key);
  return std::string(a.data(), a.size());
}

TEST(UpstreamWebSocket, AnUpgradeThatIsRefusedOrDoesNotMatchTheKeyFails) {
  struct answer {
    std::function<std::string(const std::string&)> respond;
    const char* reason;
  };
  const std::vector<answer> answers = {
      {[](const std::string&) { return std::string("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"); },
       "the server answered HTTP 403"},
      {[](const std::string&) {
         return std::string(
             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
       },
       "Sec-WebSocket-Accept does not match"},
      {[](const std::string& key) {
         return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
                accept_for(key) + "\r\n\r\n";
       },
       "does not upgrade to websocket"},
  };
  for (const auto& a : answers) {
    peer p(raw_upgrade(a.respond));
    outcome o;
    sw::net::outbound out;
    auto conn = out.connect_ws(p.url(), quick(), o.events());
    auto [code, reason] = o.wait_closed();
    EXPECT_EQ(code, 1006);
    EXPECT_NE(reason.find(a.reason), std::string::npos) << reason;
    EXPECT_NE(reason.find("websocket handshake failed"), std::string::npos) << reason;
  }
}

// Frames that come in the same packet as the 101 are not lost: they are the first the client reads.
TEST(UpstreamWebSocket, FramesThatComeWithTheHandshakesResponseAreRead) {
  peer p(raw_upgrade([](const std::string& key) {
    return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
           accept_for(key) + "\r\n\r\n" +
           std::string(
               "\x81\x05"
               "first\x81\x06"
               "second",
               15);
  }));
  outcome o;
  std::promise<std::string> texts;
  std::string got;
  o.on_text = [&](const std::string& t) {
    got += t + ";";
    if (got == "first;second;") texts.set_value(got);
  };
  sw::net::outbound out;
  auto conn = out.connect_ws(p.url(), quick(), o.events());
  auto f = texts.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready) << got;
  conn->abort();
  EXPECT_EQ(o.wait_closed().first, 1006);
}

}  // namespace

// --- over TLS (net/tls_stream.hpp: OpenSSL through a BIO of ours) ---

namespace {

// One TLS peer on a thread of its own, with the test PKI's certificate for localhost: it accepts one connection,
// completes the TLS handshake and runs `serve` on the TLS stream.
class tls_peer {
public:
  using tls = asio::ssl::stream<tcp::socket&>;
  tls_peer(const sw::test::test_pki& pki, std::function<void(tls&, tcp::socket&)> serve, bool tls12 = false)
      : ctx_(asio::ssl::context::tls_server), acc_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    if (tls12) ctx_.set_options(asio::ssl::context::no_tlsv1_3);  // a TLS 1.2 server, which may renegotiate
    ctx_.use_certificate_chain_file(pki.file("server.pem"));
    ctx_.use_private_key_file(pki.file("server.key"), asio::ssl::context::pem);
    thread_ = std::thread([this, serve = std::move(serve)] {
      tcp::socket s(io_);
      acc_.accept(s);
      tls t(s, ctx_);
      beast::error_code ec;
      t.handshake(asio::ssl::stream_base::server, ec);
      handshake_.set_value(ec ? ec.message() : std::string());
      if (!ec) serve(t, s);
    });
  }
  ~tls_peer() { thread_.join(); }
  // Empty: the handshake completed; else how it failed, as the peer saw it.
  std::future<std::string> handshake() { return handshake_.get_future(); }
  std::string url() const { return "wss://localhost:" + std::to_string(acc_.local_endpoint().port()) + "/v2/live"; }

private:
  std::promise<std::string> handshake_;
  asio::io_context io_;
  asio::ssl::context ctx_;
  tcp::acceptor acc_;
  std::thread thread_;
};

sw::net::client_options trusting(const sw::test::test_pki& pki) {
  auto o = quick();
  o.timeout = 5s;
  o.ca_file = pki.file("ca.pem");
  return o;
}

std::string bytes_of(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  std::mt19937 rng(seed);
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

}  // namespace

// Messages larger than a TLS record (16 KiB) go both ways whole and in order: the relay's chunks of 100 000 bytes to
// the peer, and texts of 60 000 bytes back, several of them in flight at once; then the peer's close is echoed.
TEST(UpstreamWebSocketTls, MessagesLargerThanARecordGoBothWaysWhole) {
  sw::test::test_pki pki;
  ASSERT_TRUE(pki.ok);
  constexpr int count = 6;
  std::promise<std::vector<std::string>> peer_got;
  tls_peer p(pki, [&](tls_peer::tls& t, tcp::socket&) {
    websocket::stream<tls_peer::tls&> ws(t);
    ws.accept();
    ws.read_message_max(1 << 20);
    std::vector<std::string> got;
    for (int i = 0; i < count; ++i) {
      beast::flat_buffer b;
      ws.read(b);
      got.push_back(beast::buffers_to_string(b.data()));
      ws.text(true);
      ws.write(asio::buffer(std::string(60'000, static_cast<char>('a' + i))));
    }
    peer_got.set_value(std::move(got));
    beast::error_code ec;
    ws.close(websocket::close_code::normal, ec);  // the client closes TCP without a close_notify: "stream truncated"
  });
  outcome o;
  std::mutex mu;
  std::vector<std::string> texts;
  o.on_text = [&](const std::string& t) {
    std::lock_guard<std::mutex> lock(mu);
    texts.push_back(t);
  };
  sw::net::outbound out;
  auto conn = out.connect_ws(p.url(), trusting(pki), o.events());
  ASSERT_EQ(o.opened_p.get_future().wait_for(5s), std::future_status::ready);
  for (int i = 0; i < count; ++i)
    conn->send_binary(std::make_shared<const std::string>(bytes_of(100'000, static_cast<unsigned>(i))));
  auto [code, reason] = o.wait_closed();
  EXPECT_EQ(code, 1000) << reason;
  auto f = peer_got.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  const auto got = f.get();
  ASSERT_EQ(got.size(), static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) EXPECT_TRUE(got[i] == bytes_of(100'000, static_cast<unsigned>(i))) << "chunk " << i;
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(texts.size(), static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) EXPECT_TRUE(texts[i] == std::string(60'000, static_cast<char>('a' + i))) << i;
}

// The peer asks for a key update (TLS 1.3 KeyUpdate, update_requested) before a message: reading it, the client must
// send a KeyUpdate of its own and encrypt with its new keys from then on. Its answer to the message reaches the peer,
// which could not decrypt it had the KeyUpdate been lost; a second round checks the keys hold.
TEST(UpstreamWebSocketTls, APeersKeyUpdateIsAnsweredAndTheConnectionGoesOn) {
  sw::test::test_pki pki;
  ASSERT_TRUE(pki.ok);
  std::promise<std::vector<std::string>> peer_got;
  tls_peer p(pki, [&](tls_peer::tls& t, tcp::socket&) {
    websocket::stream<tls_peer::tls&> ws(t);
    ws.accept();
    std::vector<std::string> got;
    beast::error_code ec;
    for (int round = 0; round < 2 && !ec; ++round) {
      if (SSL_key_update(t.native_handle(), SSL_KEY_UPDATE_REQUESTED) != 1) break;
      ws.text(true);
      ws.write(asio::buffer("question " + std::to_string(round)), ec);
      beast::flat_buffer b;
      if (!ec) ws.read(b, ec);
      if (!ec) got.push_back(beast::buffers_to_string(b.data()));
    }
    peer_got.set_value(std::move(got));
    ws.close(websocket::close_code::normal, ec);
  });
  outcome o;
  sw::net::outbound out;  // before the connection, which must go first (its timers belong to the runtime)
  std::shared_ptr<sw::net::outbound_ws> conn;
  std::promise<void> have_conn;
  auto have = have_conn.get_future().share();
  o.on_text = [&, have](const std::string& t) {
    have.wait();
    conn->send_text("answer to " + t);
  };
  conn = out.connect_ws(p.url(), trusting(pki), o.events());
  have_conn.set_value();
  auto [code, reason] = o.wait_closed();
  EXPECT_EQ(code, 1000) << reason;
  auto f = peer_got.get_future();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(f.get(), (std::vector<std::string>{"answer to question 0", "answer to question 1"}));
}

// The end without a WebSocket close: after the peer's close_notify (its TLS end), and after the TCP connection's end
// without one (a truncation); each is reported once as 1006 with what happened.
TEST(UpstreamWebSocketTls, TheEndOfTheTlsStreamIsReported) {
  sw::test::test_pki pki;
  ASSERT_TRUE(pki.ok);
  for (const bool notify : {true, false}) {
    tls_peer p(pki, [&](tls_peer::tls& t, tcp::socket& s) {
      websocket::stream<tls_peer::tls&> ws(t);
      ws.accept();
      ws.text(true);
      ws.write(asio::buffer(std::string("last words")));
      beast::error_code ec;
      if (notify) t.shutdown(ec);  // close_notify, then the client's answer or its end
      s.shutdown(tcp::socket::shutdown_send, ec);
      char c;
      s.read_some(asio::buffer(&c, 1), ec);  // until the client lets go
    });
    outcome o;
    std::promise<std::string> text;
    o.on_text = [&](const std::string& t) { text.set_value(t); };
    sw::net::outbound out;
    auto conn = out.connect_ws(p.url(), trusting(pki), o.events());
    auto t = text.get_future();
    ASSERT_EQ(t.wait_for(5s), std::future_status::ready) << "what came before the end was read";
    EXPECT_EQ(t.get(), "last words");
    // A FIN that came with the last bytes raises no edge (net/edge_socket.hpp): the relay asks at a pause, as here.
    if (!notify) conn->probe_end();
    auto [code, reason] = o.wait_closed();
    EXPECT_EQ(code, 1006) << reason;
    EXPECT_NE(reason.find(notify ? "End of file" : "stream truncated"), std::string::npos) << notify << ": " << reason;
    conn.reset();  // the socket closes: the peer's wait for it ends
  }
}

// A TLS 1.2 peer asks for a renegotiation (HelloRequest) while the client only reads. The client refuses it
// (SSL_OP_NO_RENEGOTIATION) with a no_renegotiation alert, written by OpenSSL during the read: the read sends it at
// once, so the peer learns of the refusal (and ends the connection with a fatal alert) without waiting for the
// client's next write, which here never comes.
TEST(UpstreamWebSocketTls, WhatOpenSSLWritesDuringAReadGoesOutAtOnce) {
  sw::test::test_pki pki;
  ASSERT_TRUE(pki.ok);
  std::promise<std::string> peer_saw;
  tls_peer p(
      pki,
      [&](tls_peer::tls& t, tcp::socket&) {
        websocket::stream<tls_peer::tls&> ws(t);
        ws.accept();
        beast::error_code ec;
        if (SSL_renegotiate(t.native_handle()) != 1) {
          peer_saw.set_value("SSL_renegotiate failed");
          return;
        }
        t.handshake(asio::ssl::stream_base::server, ec);  // sends the HelloRequest
        beast::flat_buffer b;
        if (!ec) ws.read(b, ec);  // the client's answer: its refusal
        peer_saw.set_value(ec ? ec.message() : "a message");
      },
      true);
  outcome o;
  sw::net::outbound out;
  auto conn = out.connect_ws(p.url(), trusting(pki), o.events());
  auto saw = peer_saw.get_future();
  const bool answered = saw.wait_for(5s) == std::future_status::ready;
  if (!answered) conn->abort();  // lets the peer's read end
  ASSERT_TRUE(answered) << "the refusal waited for a write that never came";
  EXPECT_NE(saw.get().find("no renegotiation"), std::string::npos);
  auto [code, reason] = o.wait_closed();
  EXPECT_EQ(code, 1006) << reason;
}

// A certificate the client does not trust: the handshake fails with "certificate verify failed", and the client's alert
// reaches the peer first, so its side says why (unknown CA) rather than only that the connection ended.
TEST(UpstreamWebSocketTls, AFailedVerificationIsReportedAndToldToThePeer) {
  sw::test::test_pki pki;
  ASSERT_TRUE(pki.ok);
  tls_peer p(pki, [](tls_peer::tls&, tcp::socket&) {});
  auto peer_saw = p.handshake();
  outcome o;
  sw::net::outbound out;
  auto opts = trusting(pki);
  opts.ca_file = pki.file("other-ca.pem");
  auto conn = out.connect_ws(p.url(), opts, o.events());
  auto [code, reason] = o.wait_closed();
  EXPECT_EQ(code, 1006);
  EXPECT_NE(reason.find("certificate verify failed"), std::string::npos) << reason;
  ASSERT_EQ(peer_saw.wait_for(5s), std::future_status::ready);
  EXPECT_NE(peer_saw.get().find("unknown ca"), std::string::npos) << "the client's alert reached the peer";
}

namespace {

// A TLS server on a thread of its own that takes `count` connections one after another and tells, for each, whether
// its handshake resumed a session it had given before (OpenSSL's default server: session tickets on). The first
// `https` of them get one HTTP answer; the rest are WebSockets it accepts and closes 1000.
class resuming_peer {
public:
  resuming_peer(const sw::test::test_pki& pki, int count, int https)
      : ctx_(asio::ssl::context::tls_server), acc_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    ctx_.use_certificate_chain_file(pki.file("server.pem"));
    ctx_.use_private_key_file(pki.file("server.key"), asio::ssl::context::pem);
    thread_ = std::thread([this, count, https] {
      std::vector<bool> reused;
      for (int i = 0; i < count; ++i) {
        tcp::socket s(io_);
        acc_.accept(s);
        asio::ssl::stream<tcp::socket&> t(s, ctx_);
        beast::error_code ec;
        t.handshake(asio::ssl::stream_base::server, ec);
        if (ec) break;
        reused.push_back(SSL_session_reused(t.native_handle()) == 1);
        if (i < https) {
          beast::flat_buffer b;
          beast::http::request<beast::http::string_body> req;
          beast::http::read(t, b, req, ec);
          beast::http::response<beast::http::string_body> res(beast::http::status::ok, 11, "ok");
          res.keep_alive(false);
          res.prepare_payload();
          if (!ec) beast::http::write(t, res, ec);
          t.shutdown(ec);
        } else {
          websocket::stream<asio::ssl::stream<tcp::socket&>&> ws(t);
          ws.accept(ec);
          if (!ec) ws.close(websocket::close_code::normal, ec);
        }
      }
      reused_.set_value(std::move(reused));
    });
  }
  ~resuming_peer() { thread_.join(); }
  std::future<std::vector<bool>> reused() { return reused_.get_future(); }
  std::string base() const { return "localhost:" + std::to_string(acc_.local_endpoint().port()); }

private:
  std::promise<std::vector<bool>> reused_;
  asio::io_context io_;
  asio::ssl::context ctx_;
  tcp::acceptor acc_;
  std::thread thread_;
};

}  // namespace

// The relay's connections to a host resume the session it gave before (TLS 1.3 tickets, each used once): a stream's
// HTTPS init and its `wss`, and every reconnect, cost the host one full handshake, not one each (no certificate
// chain to send and check, no signature).
TEST(UpstreamTlsResumption, TheNextConnectionsToAHostResumeItsSession) {
  sw::test::test_pki pki;
  ASSERT_TRUE(pki.ok);
  resuming_peer p(pki, 4, 2);
  sw::net::outbound out;
  auto fetch = [&] {
    std::promise<sw::net::http_outcome> got;
    out.fetch("https://" + p.base() + "/v2/live", "GET", {}, "", trusting(pki),
              [&](sw::net::http_outcome o) { got.set_value(std::move(o)); });
    auto f = got.get_future();
    EXPECT_EQ(f.wait_for(5s), std::future_status::ready);
    auto o = f.get();
    EXPECT_TRUE(o.ok) << o.error;
    EXPECT_EQ(o.body, "ok");
  };
  fetch();
  fetch();
  for (int i = 0; i < 2; ++i) {
    outcome o;
    auto conn = out.connect_ws("wss://" + p.base() + "/v2/live", trusting(pki), o.events());
    auto [code, reason] = o.wait_closed();
    EXPECT_EQ(code, 1000) << reason;
  }
  auto f = p.reused();
  ASSERT_EQ(f.wait_for(5s), std::future_status::ready);
  EXPECT_EQ(f.get(), (std::vector<bool>{false, true, true, true}));
}
