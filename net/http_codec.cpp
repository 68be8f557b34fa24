#include "net/http_codec.hpp"

#include <cctype>
#include <cstring>
#include <vector>

#include "net/url.hpp"

namespace sw::net {

namespace {

// What makes a request's framing ambiguous, or nothing. RFC 7230 §3.3.3: a Transfer-Encoding other than exactly
// "chunked" (or with a Content-Length beside it) cannot be framed safely and is refused, so that no second request
// can be smuggled behind a body read as empty; §5.4: HTTP/1.1 needs exactly one Host.
const char* framing_problem(const beast_request& req) {
  std::size_t te = 0, host = 0;
  for (auto& f : req.base()) {
    if (f.name() == http::field::transfer_encoding) {
      ++te;
      auto v = std::string(f.value());
      auto b = v.find_first_not_of(" \t"), e = v.find_last_not_of(" \t");
      v = b == std::string::npos ? "" : v.substr(b, e - b + 1);
      for (auto& c : v) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (v != "chunked") return "Transfer-Encoding other than chunked";
    } else if (f.name() == http::field::host) {
      ++host;
    }
  }
  if (te > 1) return "Transfer-Encoding given twice";
  if (te == 1 && req.base().count(http::field::content_length) > 0) return "Transfer-Encoding with Content-Length";
  if (host > 1) return "Host given twice";
  if (host == 0 && req.version() >= 11) return "no Host";
  return nullptr;
}

// An absolute-form target (RFC 9112 §3.2.2: "http://host/path?q", as proxies send it) as its origin form
// ("/path?q"); any other target as it is.
std::string origin_form(beast::string_view target) {
  std::string t(target);
  std::string lower = t.substr(0, 8);
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::size_t scheme = lower.rfind("http://", 0) == 0 ? 7 : lower.rfind("https://", 0) == 0 ? 8 : 0;
  if (scheme == 0) return t;
  auto rest = t.find_first_of("/?", scheme);
  if (rest == std::string::npos) return "/";
  return t[rest] == '/' ? t.substr(rest) : "/" + t.substr(rest);
}

bool is_tchar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

// Whether any of the request's `name` fields lists `token` (a comma-separated list, case-insensitive). A list may
// come in several lines (RFC 9110 §5.3: `Connection: keep-alive` then `Connection: Upgrade`, as Node joins them);
// Beast's own check reads the first line only.
bool lists(const beast_request& req, http::field name, const char* token) {
  for (auto& f : req.base())
    if (f.name() == name && http::token_list{f.value()}.exists(token)) return true;
  return false;
}

// A WebSocket opening handshake (RFC 6455 §4.1): an HTTP/1.1 GET whose Connection lists "upgrade" and whose Upgrade
// lists "websocket".
bool is_upgrade(const beast_request& req) {
  return req.version() >= 11 && req.method() == http::verb::get && lists(req, http::field::connection, "upgrade") &&
         lists(req, http::field::upgrade, "websocket");
}

// A WebSocket opening handshake this service cannot accept, or nothing: GET, one Sec-WebSocket-Key of 22 base64
// characters and "==", subprotocols (if any) a list of distinct tokens, version 13 ("version" when only the version
// is wrong).
const char* handshake_problem(const beast_request& req) {
  if (req.method() != http::verb::get) return "not a GET";
  if (req.base().count(http::field::sec_websocket_key) != 1) return "Sec-WebSocket-Key missing or repeated";
  auto key = req.base()[http::field::sec_websocket_key];
  // 22 base64 characters and "==", as Node's `ws` checks it: the 22nd character's low 4 bits (beyond the 16th
  // byte) are not required to be 0, since clients that draw 22 random characters instead of encoding 16 random
  // bytes worked with the old service. The key is only hashed into the accept, never decoded.
  if (key.size() != 24 || key.substr(22) != "==") return "Sec-WebSocket-Key is not a 16-byte nonce";
  static const beast::string_view alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (std::size_t i = 0; i < 22; ++i)
    if (alphabet.find(key[i]) == beast::string_view::npos) return "Sec-WebSocket-Key is not base64";
  std::string first;
  if (!subprotocol_of(req, first)) return "Sec-WebSocket-Protocol is not a list of distinct tokens";
  if (req.base()[http::field::sec_websocket_version] != "13") return "version";
  return nullptr;
}

}  // namespace

bool keeps_alive(const beast_request& req) {
  if (req.version() >= 11) return !lists(req, http::field::connection, "close");
  return lists(req, http::field::connection, "keep-alive");
}

bool subprotocol_of(const beast_request& req, std::string& first) {
  first.clear();
  std::vector<std::string> seen;
  for (auto& f : req.base()) {
    if (f.name() != http::field::sec_websocket_protocol) continue;
    const auto v = f.value();
    std::size_t i = 0;
    for (;;) {  // one element: OWS token OWS, then a comma or the end
      while (i < v.size() && (v[i] == ' ' || v[i] == '\t')) ++i;
      const auto start = i;
      while (i < v.size() && is_tchar(v[i])) ++i;
      if (i == start) return false;  // an empty element, or a character no token has
      std::string token(v.substr(start, i - start));
      while (i < v.size() && (v[i] == ' ' || v[i] == '\t')) ++i;
      for (auto& s : seen)
        if (s == token) return false;
      seen.push_back(std::move(token));
      if (i == v.size()) break;
      if (v[i] != ',') return false;
      ++i;
    }
  }
  if (!seen.empty()) first = std::move(seen.front());
  return true;
}

void limit_parser(request_parser& p, std::size_t body_limit) {
  p.body_limit(body_limit);
  p.header_limit(header_limit);
}

std::optional<http_response> parse_failure_response(const beast::error_code& ec) {
  if (ec == http::error::body_limit) return error_response(413, "payload_too_large");
  // The request line and the headers together over header_limit (a long URL counts): RFC 6585 §5, as Node answers.
  if (ec == http::error::header_limit) return error_response(431, "header_fields_too_large");
  if (ec.category() == http::make_error_code(http::error::bad_target).category() &&
      ec != http::error::partial_message && ec != http::error::end_of_stream)
    return error_response(400, "bad_request");
  return std::nullopt;  // a network error, a timeout, or the peer gone mid-request: nobody to answer
}

inbound_request decide_request(beast_request& req, bool tls) {
  inbound_request in;
  auto refuse = [&](const char* problem, http_response answer) {
    in.kind = inbound_request::refused;
    in.problem = problem;
    in.answer = std::move(answer);
    return std::move(in);
  };
  if (auto problem = framing_problem(req)) return refuse(problem, error_response(400, "bad_request"));
  auto& out = in.request;
  // HEAD is GET without the body (RFC 9110 §9.3.2): the actors see a GET, the reply loses its body.
  in.head = req.method() == http::verb::head;
  out.method = in.head ? std::string("GET") : std::string(req.method_string());
  out.target = origin_form(req.target());
  out.tls = tls;
  if (req.method() == http::verb::options && out.target == "*") {  // asterisk-form: the server itself
    out.path = "*";
  } else if (!split_target(out.target, out.path, out.query)) {
    return refuse("bad request target", error_response(400, "bad_request"));
  }
  out.headers = lower_headers(req.base());
  if (is_upgrade(req)) {
    // What Beast would refuse in its own words (a bare response): refused here as every other rejection is, a
    // complete JSON answer with CORS that closes the connection. RFC 6455 §4.2.1.
    if (auto problem = handshake_problem(req)) {
      if (std::strcmp(problem, "version") == 0) {
        auto r = error_response(426, "unsupported_websocket_version");
        r.headers.emplace_back("Sec-WebSocket-Version", "13");
        return refuse("unsupported WebSocket version", std::move(r));
      }
      return refuse(problem, error_response(400, "bad_websocket_handshake"));
    }
    in.kind = inbound_request::upgrade;
    return in;
  }
  out.body = std::move(req.body());
  in.kind = inbound_request::plain;
  return in;
}

beast_response render_response(http_response r, unsigned version, bool keep_alive, bool head,
                               const std::string& cors_origin) {
  beast_response res(static_cast<http::status>(r.status), version);
  res.set(http::field::server, "sessions-ws");
  if (r.status != 204 && r.status != 304 && !r.content_type.empty()) res.set(http::field::content_type, r.content_type);
  res.set(http::field::access_control_allow_origin, cors_origin);
  res.set(http::field::access_control_allow_methods, "GET, POST, OPTIONS");
  res.set(http::field::access_control_allow_headers, "Content-Type, Authorization");
  for (auto& [k, v] : r.headers) res.set(k, v);
  res.keep_alive(keep_alive && !r.close);
  res.body() = std::move(r.body);
  res.prepare_payload();
  if (r.status == 304) res.erase(http::field::content_length);  // RFC 9110 §15.4.5: not the 200's length, so none
  if (head) {                                                   // the length the body would have, and no body
    const auto size = res.body().size();
    res.body().clear();
    res.content_length(size);
  }
  return res;
}

expectation expectation_of(const beast_request& req) {
  if (req.version() < 11) return expectation::none;
  auto range = req.base().equal_range(http::field::expect);
  if (range.first == range.second) return expectation::none;
  for (auto it = range.first; it != range.second; ++it) {
    const auto v = it->value();
    const auto b = v.find_first_not_of(" \t"), e = v.find_last_not_of(" \t");
    if (b == beast::string_view::npos || !beast::iequals(v.substr(b, e - b + 1), "100-continue"))
      return expectation::unmet;
  }
  return expectation::send_continue;
}

http_response error_response(unsigned status, const char* code) {
  auto r = json_response(status, std::string("{\"error\":\"") + code + "\"}");
  r.close = true;
  return r;
}

}  // namespace sw::net
