// The HTTP request head and routing: bytes as a client would send them on one connection (several requests when
// they are pipelined) go through the server's own parser limits and request decision (net/http_codec) and the
// gateway actor's real handlers (routes, token checks, admission), with no socket. Every answer must be a
// well-formed HTTP response (it parses back as exactly one response: no header injection), in valid UTF-8, with a
// JSON object for a body when it says JSON; and every request is answered within 5 s (no hang).
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include <unistd.h>

#include <caf/send.hpp>

#include "net/http_codec.hpp"
#include "proto/json.hpp"
#include "proto/rapidjson.hpp"
#include "service/service.hpp"

namespace {

using namespace sw::net;

// One service for the whole run: SQLite in a temporary directory, the secret the seed tokens are signed with. It is
// never destroyed: libFuzzer ends the process with exit(), and tearing the actor system down while static objects
// go away around it would fail for reasons of no interest here.
sw::service& service() {
  static sw::service* svc = [] {
    sw::config cfg;
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.jwt_secret = "fuzz-secret-0123456789";
    cfg.service_api_secret = "fuzz-service-secret";
    cfg.log_level = "error";
    static const auto dir = std::filesystem::temp_directory_path() / ("sw-fuzz-http-" + std::to_string(::getpid()));
    // Removed at exit(); a crash (a finding) keeps it for a look.
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    });
    cfg.sqlite_path = (dir / "sessions.db").string();
    cfg.persist_journal_dir = (dir / "journal").string();
    auto* s = new sw::service(cfg, std::optional<sw::stt_provider>(sw::stt_provider{}));
    s->start();
    return s;
  }();
  return *svc;
}

struct answer_once final : sw::http_responder, sw::upgrade_responder {
  std::promise<sw::http_response> promise;
  void respond(sw::http_response res) override { promise.set_value(std::move(res)); }
  void reject(sw::http_response res) override {
    res.close = true;
    promise.set_value(std::move(res));
  }
  void accept(sw::session_actor session) override {
    caf::anon_send(session, sw::closed_atom::value, false);  // no socket behind it: the stream ends at once
    sw::http_response r;
    r.status = 101;
    r.close = true;  // the connection is a WebSocket now: no further HTTP request on it
    promise.set_value(std::move(r));
  }
};

// What the gateway actor answers (a hang is a finding).
sw::http_response ask(bool upgrade, sw::http_request req) {
  auto responder = std::make_shared<answer_once>();
  auto future = responder->promise.get_future();
  auto net = service().gateway();
  if (upgrade)
    caf::anon_send(net, sw::upgrade_atom::value, std::move(req), sw::upgrade_responder_ptr(responder));
  else
    caf::anon_send(net, sw::http_atom::value, std::move(req), sw::http_responder_ptr(responder));
  responder.reset();
  if (future.wait_for(std::chrono::seconds(5)) != std::future_status::ready) __builtin_trap();
  return future.get();
}

void check(const beast_response& res, bool head) {
  if (res.result_int() < 100 || res.result_int() > 599) __builtin_trap();
  const auto& body = res.body();
  if (sw::valid_utf8(body) != body) __builtin_trap();
  if (res[http::field::content_type] == "application/json" && !body.empty()) {
    rapidjson::Document d;
    if (!sw::parse_json(d, body) || !d.IsObject()) __builtin_trap();
  }
  std::ostringstream wire;
  wire << res;
  const std::string bytes = wire.str();
  for (auto& f : res.base())
    if (f.value().find_first_of("\r\n") != beast::string_view::npos) __builtin_trap();
  http::response_parser<http::string_body> back;
  back.eager(true);
  back.skip(head);
  beast::error_code ec;
  auto used = back.put(boost::asio::buffer(bytes), ec);
  if (ec || !back.is_done() || used != bytes.size()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  beast::flat_buffer buffer;
  auto in = buffer.prepare(size);
  std::memcpy(in.data(), data, size);
  buffer.commit(size);
  for (int requests = 0; requests < 16; ++requests) {  // pipelined requests on one connection
    request_parser parser;
    limit_parser(parser, 64 * 1024);
    beast::error_code ec;
    parser.eager(true);
    while (!parser.is_done() && !ec) {  // as http::read does, with everything already received
      auto used = parser.put(buffer.data(), ec);
      buffer.consume(used);
      if (ec == http::error::need_more) ec = {};
      if (!ec && used == 0 && !parser.is_done()) {  // no more will come: the peer closed mid-request
        parser.put_eof(ec);
        if (!ec && !parser.is_done()) return 0;
      }
    }
    if (ec) {
      if (auto answer = parse_failure_response(ec))
        check(render_response(std::move(*answer), 11, false, false, "*"), false);
      return 0;
    }
    auto& req = parser.get();
    const unsigned version = req.version();
    const bool keep = req.keep_alive();
    auto decided = decide_request(req, false);
    sw::http_response answer = decided.kind == inbound_request::refused
                                   ? std::move(decided.answer)
                                   : ask(decided.kind == inbound_request::upgrade, std::move(decided.request));
    if (answer.status == 101) return 0;  // accepted: a WebSocket from here on
    auto res = render_response(std::move(answer), version, keep, decided.head, "*");
    check(res, decided.head);
    if (!res.keep_alive() || buffer.size() == 0) return 0;
  }
  return 0;
}
