// Internal to net/ (and its fuzz target): what the server makes of one parsed HTTP request, and the bytes it
// answers with, without a socket. The server's connections call exactly these; tests/fuzz/fuzz_http_request feeds
// them raw bytes.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "net/beast_util.hpp"

namespace sw::net {

using request_parser = http::request_parser<http::string_body>;
using beast_request = http::request<http::string_body>;
using beast_response = http::response<http::string_body>;

// What a request's line and headers may take together (Node's default too).
constexpr std::uint32_t header_limit = 16 * 1024;

// The limits every request is read with: bodies above `body_limit` are refused 413, heads above header_limit 431.
void limit_parser(request_parser& p, std::size_t body_limit);

// The answer to a request the parser refused (`ec` from reading), or nothing when there is none to give (the
// connection ended, timed out or broke mid-request): 413 for a body over the limit, 431 for a head over its limit,
// 400 for a malformed request.
std::optional<http_response> parse_failure_response(const beast::error_code& ec);

// One request, decided: for the gateway actor (a plain request or a WebSocket upgrade), or answered by net/ itself
// (ambiguous framing, a bad target, a handshake Beast would refuse), with what was wrong for the log.
struct inbound_request {
  enum kind_t { plain, upgrade, refused } kind = refused;
  http_request request;           // plain, upgrade: what the actors see (without `remote`)
  http_response answer;           // refused: the complete answer; the connection closes after it
  const char* problem = nullptr;  // refused: why, for the log
  bool head = false;              // a HEAD: the actors see a GET, the answer loses its body
};
inbound_request decide_request(beast_request& req, bool tls);

// Whether the client keeps the connection open after this request (RFC 9112 §9.3): HTTP/1.1 unless a Connection
// line lists "close", HTTP/1.0 only when one lists "keep-alive". Every Connection line counts, not only the first.
bool keeps_alive(const beast_request& req);

// The subprotocol a WebSocket upgrade is answered with (RFC 6455 §4.2.2): the first the client lists in its
// Sec-WebSocket-Protocol fields, as Node's `ws` picks by default (a browser that asks for one fails the connection
// unless one comes back); empty when it lists none. False when the lists are not comma-separated distinct tokens
// (RFC 6455 §4.1), which is refused 400 as `ws` does.
bool subprotocol_of(const beast_request& req, std::string& first);

// What a request's head asks before its body is sent (RFC 9110 §10.1.1), once the head is read: nothing, a
// "100 Continue" first (`Expect: 100-continue`: curl and others wait a second for it before sending a body; Node
// answers it at once, and so do we), or an expectation this server cannot meet (any other `Expect`: refused 417,
// as Node does). An HTTP/1.0 request is never given an interim answer; its Expect is ignored.
enum class expectation { none, send_continue, unmet };
expectation expectation_of(const beast_request& req);

// The response as written: Server, CORS and Content-Type headers, keep-alive or close, HEAD without a body.
beast_response render_response(http_response r, unsigned version, bool keep_alive, bool head,
                               const std::string& cors_origin);

// A JSON error answer that closes the connection: {"error":"<code>"}.
http_response error_response(unsigned status, const char* code);

}  // namespace sw::net
