// Starts the real service in-process on an ephemeral loopback port, and helpers for tokens and URLs.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "net/client.hpp"
#include "proto/token.hpp"
#include "service/service.hpp"
#include "tests/support/echo_relay.hpp"

namespace sw::test {

inline const std::string secret = "test-secret-0123456789";

struct harness {
  // `tweak` edits the configuration before start; `stt` = nullopt means no provider (the product default).
  explicit harness(const std::function<void(config&)>& tweak = {}, std::optional<stt_provider> stt = echo_provider(),
                   bool provider_from_config = false);
  ~harness();

  std::string http(const std::string& path) const;  // http://127.0.0.1:PORT/path
  std::string ws(const std::string& token, const std::string& extra_query = {}) const;
  static std::string token(const std::string& room, const std::string& identity, const std::string& sub = {},
                           const std::string& name = {}, long ttl = 3600);
  std::unique_ptr<net::ws_client> connect(const std::string& room, const std::string& identity,
                                          const std::string& extra_query = {}, const std::string& sub = {}) const;

  config cfg;
  std::string data_dir;  // this harness's SQLite file and journal (removed at the end unless the test failed)
  std::unique_ptr<service> svc;
  std::uint16_t port = 0;
  std::string scheme_http = "http", scheme_ws = "ws";
};

// Reads messages until one whose text contains `needle`; returns it (throws on timeout/close).
std::string expect_message(net::ws_client& c, const std::string& needle, int timeout_ms = 3000);

// Reads until the socket closes; returns the close code (0 on timeout).
std::uint16_t expect_close(net::ws_client& c, int timeout_ms = 3000, std::string* reason = nullptr);

// Polls `done` every few milliseconds until it holds (true) or `limit` passes (false): for waiting on an effect
// that no message announces (a metric, a fake's state), never a fixed sleep.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = std::chrono::seconds(5));

// The service's error and warning lines (its metrics' log) from the moment capture_log is called, in order.
struct log_capture {
  struct line {
    bool error = false;
    std::string text;
  };
  std::vector<line> lines() const;  // a copy, safe while the service logs
  std::string all() const;          // every line's text, each ending in '\n'

  mutable std::mutex mu;
  std::vector<line> captured;
};
std::shared_ptr<log_capture> capture_log(const harness& h);

// A bare TCP socket connected to 127.0.0.1:`port` (blocking), or -1 when it could not connect (errno says why).
int connect_loopback(std::uint16_t port);

// One counter of GET /metrics (JSON), or -1 when it is absent.
long long metric(const harness& h, const std::string& name);

// A minimal JSON field reader for assertions: the raw value of "key" (strings without quotes).
std::string field(const std::string& json, const std::string& key);

}  // namespace sw::test
