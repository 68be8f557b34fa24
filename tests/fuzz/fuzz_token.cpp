// Tokens: the input as a whole token, or (first byte odd) as the header or payload JSON of a token signed with the
// right secret, so that the claim checks past the signature are reached too. Never a crash; a token that passes
// has its claims.
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include <jwt/jwt.hpp>

#include "proto/token.hpp"

namespace {

const std::string secret = "fuzz-secret";

std::string b64url(const std::string& in) {
  std::string out = jwt::base64_encode(in.c_str(), in.size());
  out.resize(jwt::base64_uri_encode(&out[0], out.size()));
  return out;
}

std::string signed_token(const std::string& header, const std::string& payload) {
  auto input = b64url(header) + "." + b64url(payload);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len);
  return input + "." + b64url(std::string(reinterpret_cast<char*>(mac), len));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string token;
  if (data[0] % 4 == 0) {
    token = rest;
  } else if (data[0] % 4 == 1) {
    token = signed_token(rest, R"({"sessionSlug":"r","identity":"a","exp":9999999999})");
  } else {
    token = signed_token(R"({"alg":"HS256","typ":"JWT"})", rest);
  }
  auto check = sw::verify_token(token, secret);
  if (check.claims && (check.claims->session_slug.empty() || check.claims->identity.empty())) __builtin_trap();
  if (!check.claims && check.reason.empty()) __builtin_trap();
  return 0;
}
