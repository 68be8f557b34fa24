#include "proto/token.hpp"

#include <ctime>
#include <optional>

#include <jwt/jwt.hpp>

namespace sw {

namespace {

// cpp-jwt's error categories are per translation unit; compare by name and value (stack-notes §6).
std::string describe(const std::error_code& ec) {
  std::string category = ec.category().name();
  if (category == "verification") {
    switch (static_cast<jwt::VerificationErrc>(ec.value())) {
      case jwt::VerificationErrc::InvalidAlgorithm:
        return "token algorithm is not HS256";
      case jwt::VerificationErrc::TokenExpired:
        return "token expired";
      case jwt::VerificationErrc::ImmatureSignature:
        return "token not yet valid (nbf)";
      case jwt::VerificationErrc::InvalidSignature:
        return "token signature is invalid";
      case jwt::VerificationErrc::TypeConversionError:
        return "token claim has the wrong type";
      default:
        return "token verification failed: " + ec.message();
    }
  }
  if (category == "algorithms") return "token algorithm is not accepted";
  return "token is malformed";
}

bool non_empty_string(const json_t& payload, const char* key) {
  auto it = payload.find(key);
  return it != payload.end() && it->is_string() && !it->get<std::string>().empty();
}

std::string optional_string(const json_t& payload, const char* key) {
  auto it = payload.find(key);
  return it != payload.end() && it->is_string() ? it->get<std::string>() : std::string{};
}

constexpr std::size_t max_token_length = 8192;

// header.payload.signature, each part base64url. cpp-jwt's decoder indexes a table with the raw byte and
// asserts (or, under NDEBUG, reads out of bounds) on anything else, so nothing else may reach it; and it shifts a
// negative value on a '=' inside a part (found by fuzzing), so '=' may only end a part, at most twice.
bool well_formed(const std::string& token) {
  if (token.size() > max_token_length) return false;
  int dots = 0, padding = 0;
  for (unsigned char c : token) {
    if (c == '.') {
      ++dots;
      padding = 0;
    } else if (c == '=') {
      if (++padding > 2) return false;
    } else if (padding > 0 ||
               !((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) {
      return false;
    }
  }
  return dots == 2;
}

// cpp-jwt compares the algorithm without regard to case ("hs256" passed) and ignores "crit", so the header is read
// here first: the algorithm is exactly HS256 (RFC 8725 §3.1), and a "crit" list is refused, since this service
// understands no extension (RFC 7515 §4.1.11). Empty when the header (and the time claims) are acceptable.
std::string header_problem(const std::string& token) {
  auto segment = token.substr(0, token.find('.'));
  std::string text;
  try {
    text = jwt::base64_uri_decode(segment.data(), segment.size());
  } catch (const std::exception&) {
    return "token is malformed";
  }
  auto header = json_t::parse(text, nullptr, false);
  if (header.is_discarded() || !header.is_object()) return "token is malformed";
  auto alg = header.find("alg");
  if (alg == header.end() || !alg->is_string() || alg->get<std::string>() != "HS256")
    return "token algorithm is not HS256";
  if (header.contains("crit")) return "token header has critical extensions (crit) this service does not support";
  // cpp-jwt reads exp, nbf and iat as unsigned 64-bit integers whatever they are (a 4e+23 made that undefined,
  // found by fuzzing): each present must be a whole number of seconds from 1970 to 2^40, checked before it looks.
  auto dot = token.find('.');
  auto payload_segment = token.substr(dot + 1, token.find('.', dot + 1) - dot - 1);
  json_t payload;
  try {
    payload = json_t::parse(jwt::base64_uri_decode(payload_segment.data(), payload_segment.size()), nullptr, false);
  } catch (const std::exception&) {
    return "token is malformed";
  }
  if (payload.is_discarded() || !payload.is_object()) return "token is malformed";
  for (const char* claim : {"exp", "nbf", "iat"}) {
    auto it = payload.find(claim);
    if (it == payload.end()) continue;
    const bool whole = it->is_number_unsigned() || (it->is_number_integer() && it->get<std::int64_t>() > 0);
    if (!whole || it->get<std::uint64_t>() > (1ULL << 40))
      return std::string("token ") + claim + " claim is not a positive whole number of seconds";
  }
  return {};
}

}  // namespace

namespace {

// The payload of an HS256 JWT that passes every check but the transcription claims; else `reason` says why not.
std::optional<json_t> verified_payload(const std::string& token, const std::string& secret, std::string& reason) {
  if (token.empty()) {
    reason = "missing token";
    return std::nullopt;
  }
  if (!well_formed(token)) {
    reason = "token is malformed";
    return std::nullopt;
  }
  if (secret.empty()) {
    reason = "server has no token secret";
    return std::nullopt;
  }
  if (auto problem = header_problem(token); !problem.empty()) {
    reason = problem;
    return std::nullopt;
  }
  std::error_code ec;
  jwt::jwt_object obj;
  try {
    // Only HS256: never list "none" (cpp-jwt then accepts unsigned tokens).
    obj = jwt::decode(token, jwt::params::algorithms({"HS256"}), ec, jwt::params::secret(secret),
                      jwt::params::leeway(5), jwt::params::verify(true));
  } catch (const std::exception&) {
    reason = "token is malformed";
    return std::nullopt;
  }
  if (ec) {
    reason = describe(ec);
    return std::nullopt;
  }
  if (obj.header().algo() != jwt::algorithm::HS256) {
    reason = "token algorithm is not HS256";
    return std::nullopt;
  }
  json_t payload = obj.payload().create_json_obj();
  auto exp = payload.find("exp");
  if (exp == payload.end() || !exp->is_number()) {
    reason = "token has no exp claim";
    return std::nullopt;
  }
  // NumericDate, whole seconds, after 1970 (a negative or fractional exp slipped past cpp-jwt's expiry check).
  const bool whole = exp->is_number_unsigned() ? exp->get<std::uint64_t>() <= 1ULL << 40 : exp->is_number_integer();
  if (!whole || exp->get<std::int64_t>() <= 0) {
    reason = "token exp claim is not a positive whole number of seconds";
    return std::nullopt;
  }
  if (exp->get<std::int64_t>() + 5 < static_cast<std::int64_t>(std::time(nullptr))) {
    reason = "token expired";
    return std::nullopt;
  }
  return payload;
}

}  // namespace

jwt_payload verify_jwt(const std::string& token, const std::string& secret) {
  jwt_payload out;
  if (auto p = verified_payload(token, secret, out.reason)) out.json = p->dump();
  return out;
}

token_check verify_token(const std::string& token, const std::string& secret) {
  token_check out;
  auto verified = verified_payload(token, secret, out.reason);
  if (!verified) return out;
  json_t& payload = *verified;
  auto exp = payload.find("exp");
  for (const char* key : {"sessionSlug", "identity"}) {
    if (!non_empty_string(payload, key)) {
      out.reason = std::string("token has no ") + key + " claim";
      return out;
    }
  }
  token_claims c;
  c.session_slug = payload["sessionSlug"].get<std::string>();
  c.identity = payload["identity"].get<std::string>();
  c.user_id = optional_string(payload, "sub");
  if (c.user_id.empty()) c.user_id = c.identity;
  c.session_id = optional_string(payload, "sessionId");
  c.name = optional_string(payload, "name");
  c.track_id = optional_string(payload, "trackId");
  c.exp = exp->get<std::int64_t>();
  out.claims = std::move(c);
  return out;
}

std::string mint_token(const token_claims& claims, const std::string& secret, std::int64_t exp,
                       const std::string& extra_json) {
  jwt::jwt_object obj{jwt::params::algorithm("HS256"), jwt::params::secret(secret)};
  if (!claims.session_slug.empty()) obj.add_claim("sessionSlug", claims.session_slug);
  if (!claims.identity.empty()) obj.add_claim("identity", claims.identity);
  if (!claims.user_id.empty()) obj.add_claim("sub", claims.user_id);
  if (!claims.session_id.empty()) obj.add_claim("sessionId", claims.session_id);
  if (!claims.name.empty()) obj.add_claim("name", claims.name);
  if (!claims.track_id.empty()) obj.add_claim("trackId", claims.track_id);
  obj.add_claim("iat", static_cast<std::int64_t>(std::time(nullptr)));
  obj.add_claim("exp", exp);
  if (!extra_json.empty()) {
    auto extra = json_t::parse(extra_json);
    for (auto it = extra.begin(); it != extra.end(); ++it) obj.payload().add_claim(it.key(), it.value());
  }
  return obj.signature();
}

}  // namespace sw
