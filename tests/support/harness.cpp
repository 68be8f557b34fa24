#include "tests/support/harness.hpp"

#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>

#include <gtest/gtest.h>

#include "proto/rapidjson.hpp"

namespace sw::test {

harness::harness(const std::function<void(config&)>& tweak, std::optional<stt_provider> stt,
                 bool provider_from_config) {
  cfg.host = "127.0.0.1";
  cfg.port = 0;
  cfg.jwt_secret = secret;
  cfg.service_api_secret = "service-secret";
  cfg.shutdown_timeout = std::chrono::milliseconds(3000);
  cfg.log_level = "error";
  static std::atomic<int> counter{0};
  data_dir = (std::filesystem::temp_directory_path() /
              ("sw-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++)))
                 .string();
  cfg.sqlite_path = data_dir + "/sessions.db";
  cfg.persist_journal_dir = data_dir + "/journal";
  cfg.persist_flush = std::chrono::milliseconds(20);
  // script/test runs the sanitized build with one I/O thread, the other with two.
  if (const char* v = std::getenv("SESSIONS_WS_TEST_IO_THREADS"); v && std::atoi(v) > 0) cfg.io_threads = std::atoi(v);
  if (tweak) tweak(cfg);
  if (provider_from_config) {
    svc = std::make_unique<service>(cfg);
  } else {
    svc = std::make_unique<service>(cfg, stt ? std::move(stt) : std::optional<stt_provider>(stt_provider{}));
  }
  svc->start();
  port = svc->port();
}

harness::~harness() {
  svc->shutdown();
  svc.reset();  // the database and the journal are closed
  // A passing test leaves nothing behind (script/test runs thousands of harnesses); a failing one keeps its
  // database and journal for a look.
  if (::testing::Test::HasFailure()) {
    std::fprintf(stderr, "kept for a look: %s\n", data_dir.c_str());
  } else {
    std::error_code ec;
    std::filesystem::remove_all(data_dir, ec);
  }
}

std::string harness::http(const std::string& path) const {
  return scheme_http + "://" + cfg.host + ":" + std::to_string(port) + path;
}

std::string harness::ws(const std::string& token, const std::string& extra_query) const {
  return scheme_ws + "://" + cfg.host + ":" + std::to_string(port) + "/api/realtime/transcribe?token=" + token +
         extra_query;
}

std::string harness::token(const std::string& room, const std::string& identity, const std::string& sub,
                           const std::string& name, long ttl) {
  token_claims c;
  c.session_slug = room;
  c.identity = identity;
  c.user_id = sub;
  c.name = name;
  c.session_id = "vs-" + room;
  return mint_token(c, secret, static_cast<std::int64_t>(std::time(nullptr)) + ttl);
}

std::unique_ptr<net::ws_client> harness::connect(const std::string& room, const std::string& identity,
                                                 const std::string& extra_query, const std::string& sub) const {
  return net::ws_client::connect(ws(token(room, identity, sub), extra_query));
}

std::string expect_message(net::ws_client& c, const std::string& needle, int timeout_ms) {
  return c.read_until(needle, std::chrono::milliseconds(timeout_ms));
}

std::uint16_t expect_close(net::ws_client& c, int timeout_ms, std::string* reason) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    auto m = c.read(left);
    if (m.kind == net::ws_client::message::closed) {
      if (reason) *reason = m.close_reason;
      return m.close_code;
    }
    if (m.kind == net::ws_client::message::timeout) break;
  }
  return 0;
}

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::vector<log_capture::line> log_capture::lines() const {
  std::lock_guard<std::mutex> lock(mu);
  return captured;
}

std::string log_capture::all() const {
  std::string out;
  for (auto& l : lines()) out += l.text + "\n";
  return out;
}

std::shared_ptr<log_capture> capture_log(const harness& h) {
  auto c = std::make_shared<log_capture>();
  h.svc->context().metrics->set_log([c](bool error, const std::string& text) {
    std::lock_guard<std::mutex> lock(c->mu);
    c->captured.push_back({error, text});
  });
  return c;
}

int connect_loopback(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

long long metric(const harness& h, const std::string& name) {
  auto v = field(field(net::http_fetch(h.http("/metrics")).body, "counters"), name);
  return v.empty() || v.find_first_not_of("0123456789-") != std::string::npos ? -1 : std::stoll(v);
}

std::string field(const std::string& json, const std::string& key) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  if (d.HasParseError() || !d.IsObject()) return "<not json>";
  auto it = d.FindMember(key.c_str());
  if (it == d.MemberEnd()) return "<missing>";
  if (it->value.IsString()) return it->value.GetString();
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  it->value.Accept(w);
  return sb.GetString();
}

}  // namespace sw::test
