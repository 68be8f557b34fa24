// Transcription tokens (HS256 JWT minted by the web app): verification and minting.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace sw {

struct token_claims {
  std::string session_slug;
  std::string identity;
  std::string user_id;     // `sub`, else the identity
  std::string session_id;  // optional
  std::string name;        // optional display name
  std::int64_t exp = 0;
  std::string track_id;  // `trackId`: egress tokens only (this service's own, for /egress/audio)
};

struct token_check {
  std::optional<token_claims> claims;  // set when the token is valid
  std::string reason;                  // why it is not: for the 401 body and the log
};

// HS256 only (any other alg, `none` included, is rejected); `exp` required; `nbf` honoured; 5 s leeway.
token_check verify_token(const std::string& token, const std::string& secret);

// Any HS256 JWT checked as strictly as a transcription token (algorithm, signature, exp required, nbf honoured),
// without asking for the transcription claims: its payload as JSON text, or the reason it is refused.
struct jwt_payload {
  std::optional<std::string> json;
  std::string reason;
};
jwt_payload verify_jwt(const std::string& token, const std::string& secret);

// Signs claims with HS256 (tests, tools, the development URL of script/server). `extra_json` is merged
// into the payload verbatim when not empty (a JSON object).
std::string mint_token(const token_claims& claims, const std::string& secret, std::int64_t exp,
                       const std::string& extra_json = {});

}  // namespace sw
