// TLS and plain on the same port, with a test CA generated at test time.
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tests/support/harness.hpp"
#include "tests/support/pki.hpp"

namespace {

using sw::test::expect_message;
using sw::test::field;
using sw::test::harness;
using sw::test::test_pki;

class Tls : public ::testing::Test {
protected:
  static void SetUpTestSuite() { pki = new test_pki(); }
  static void TearDownTestSuite() { delete pki; }
  void SetUp() override {
    ASSERT_TRUE(pki->ok) << "openssl could not create the test PKI";
    h = std::make_unique<harness>([](sw::config& c) {
      c.tls_cert_file = pki->file("server.pem");
      c.tls_key_file = pki->file("server.key");
    });
    trusted.ca_file = pki->file("ca.pem");
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

TEST(TlsConfig, MissingCertificateIsAClearStartError) {
  sw::config c;
  c.host = "127.0.0.1";
  c.port = 0;
  c.jwt_secret = "x";
  c.tls_cert_file = "/nonexistent/cert.pem";
  c.tls_key_file = "/nonexistent/key.pem";
  sw::service s(c);
  try {
    s.start();
    FAIL() << "started without a certificate";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/cert.pem"), std::string::npos) << e.what();
  }
}

}  // namespace
