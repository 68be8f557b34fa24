#include <ctime>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <jwt/jwt.hpp>

#include "proto/token.hpp"

namespace {

const std::string secret = "unit-secret";
std::int64_t now() {
  return static_cast<std::int64_t>(std::time(nullptr));
}

sw::token_claims claims() {
  sw::token_claims c;
  c.session_slug = "room-1";
  c.identity = "alice";
  c.user_id = "user-1";
  c.session_id = "vs-1";
  c.name = "Alice";
  return c;
}

// Signs an arbitrary payload with an arbitrary algorithm (cpp-jwt), to build every bad variant.
std::string sign(const std::string& alg, const json_t& payload, const std::string& key = secret) {
  jwt::jwt_object obj{jwt::params::algorithm(alg), jwt::params::secret(key)};
  for (auto it = payload.begin(); it != payload.end(); ++it) obj.payload().add_claim(it.key(), it.value());
  return obj.signature();
}

json_t good_payload() {
  return json_t{{"sessionSlug", "room-1"}, {"identity", "alice"}, {"sub", "user-1"}, {"exp", now() + 600}};
}

std::string b64url(const std::string& in) {
  std::string out = jwt::base64_encode(in.c_str(), in.size());
  auto n = jwt::base64_uri_encode(&out[0], out.size());
  out.resize(n);
  return out;
}

// A token with the header and payload given as they are, signed with HMAC-SHA256 like a real one.
std::string sign_raw(const std::string& header, const json_t& payload, const std::string& key = secret) {
  auto input = b64url(header) + "." + b64url(payload.dump());
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(input.data()),
       input.size(), mac, &len);
  return input + "." + b64url(std::string(reinterpret_cast<char*>(mac), len));
}

TEST(Token, TheHeaderMustSayExactlyHs256AndNothingCritical) {
  EXPECT_TRUE(sw::verify_token(sign_raw(R"({"alg":"HS256","typ":"JWT"})", good_payload()), secret).claims)
      << "the signer itself works";
  auto lower = sw::verify_token(sign_raw(R"({"alg":"hs256","typ":"JWT"})", good_payload()), secret);
  EXPECT_FALSE(lower.claims);
  EXPECT_EQ(lower.reason, "token algorithm is not HS256");
  auto crit = sw::verify_token(sign_raw(R"({"alg":"HS256","crit":["exp"],"exp":1})", good_payload()), secret);
  EXPECT_FALSE(crit.claims);
  EXPECT_NE(crit.reason.find("crit"), std::string::npos) << crit.reason;
  EXPECT_FALSE(sw::verify_token(sign_raw(R"({"typ":"JWT"})", good_payload()), secret).claims);
}

// Found by fuzzing: cpp-jwt converted a huge exp (4e+23) to an unsigned integer, which is undefined.
TEST(Token, TimeClaimsMustBeWholeSecondsInRange) {
  for (const char* claim : {"exp", "nbf", "iat"}) {
    for (json_t bad : {json_t(4e23), json_t(-5), json_t(1.5), json_t("1")}) {
      auto p = good_payload();
      p[claim] = bad;
      auto r = sw::verify_token(sign_raw(R"({"alg":"HS256","typ":"JWT"})", p), secret);
      EXPECT_FALSE(r.claims) << claim << " " << bad.dump();
    }
  }
}

TEST(Token, ExpMustBeAPositiveWholeNumber) {
  for (json_t bad : {json_t(-100), json_t(0), json_t(static_cast<double>(now()) + 600.5), json_t("9999999999"),
                     json_t(18446744073709551615ULL)}) {
    auto p = good_payload();
    p["exp"] = bad;
    auto r = sw::verify_token(sign_raw(R"({"alg":"HS256","typ":"JWT"})", p), secret);
    EXPECT_FALSE(r.claims) << bad.dump();
  }
}

TEST(Token, ValidTokenYieldsClaims) {
  auto r = sw::verify_token(sw::mint_token(claims(), secret, now() + 60), secret);
  ASSERT_TRUE(r.claims) << r.reason;
  EXPECT_EQ(r.claims->session_slug, "room-1");
  EXPECT_EQ(r.claims->identity, "alice");
  EXPECT_EQ(r.claims->user_id, "user-1");
  EXPECT_EQ(r.claims->session_id, "vs-1");
  EXPECT_EQ(r.claims->name, "Alice");
}

TEST(Token, SubFallsBackToIdentity) {
  auto c = claims();
  c.user_id.clear();
  auto r = sw::verify_token(sw::mint_token(c, secret, now() + 60), secret);
  ASSERT_TRUE(r.claims);
  EXPECT_EQ(r.claims->user_id, "alice");
}

TEST(Token, WrongSecretIsRejected) {
  auto r = sw::verify_token(sw::mint_token(claims(), "other-secret", now() + 60), secret);
  EXPECT_FALSE(r.claims);
  EXPECT_NE(r.reason.find("signature"), std::string::npos) << r.reason;
}

TEST(Token, AlgNoneIsRejected) {
  auto header = b64url(R"({"alg":"none","typ":"JWT"})");
  auto payload = b64url(good_payload().dump());
  for (auto tok : {header + "." + payload + ".", header + "." + payload}) {
    auto r = sw::verify_token(tok, secret);
    EXPECT_FALSE(r.claims) << tok;
  }
  // also through cpp-jwt's own NONE signer
  EXPECT_FALSE(sw::verify_token(sign("NONE", good_payload()), secret).claims);
}

TEST(Token, OtherHmacAlgorithmsAreRejected) {
  for (auto alg : {"HS384", "HS512"}) {
    auto r = sw::verify_token(sign(alg, good_payload()), secret);
    EXPECT_FALSE(r.claims) << alg;
    EXPECT_NE(r.reason.find("HS256"), std::string::npos) << r.reason;
  }
}

TEST(Token, AsymmetricHeaderIsRejected) {
  auto header = b64url(R"({"alg":"RS256","typ":"JWT"})");
  auto tok = header + "." + b64url(good_payload().dump()) + "." + b64url("not-a-signature");
  EXPECT_FALSE(sw::verify_token(tok, secret).claims);
}

TEST(Token, ExpiredIsRejectedBeyondLeeway) {
  auto r = sw::verify_token(sw::mint_token(claims(), secret, now() - 30), secret);
  EXPECT_FALSE(r.claims);
  EXPECT_EQ(r.reason, "token expired");
}

TEST(Token, ExpiryWithinLeewayIsAccepted) {
  EXPECT_TRUE(sw::verify_token(sw::mint_token(claims(), secret, now() - 2), secret).claims);
}

TEST(Token, NotBeforeInTheFutureIsRejected) {
  auto p = good_payload();
  p["nbf"] = now() + 120;
  auto r = sw::verify_token(sign("HS256", p), secret);
  EXPECT_FALSE(r.claims);
  EXPECT_NE(r.reason.find("nbf"), std::string::npos) << r.reason;
  p["nbf"] = now() - 1;
  EXPECT_TRUE(sw::verify_token(sign("HS256", p), secret).claims);
}

TEST(Token, MissingClaimsAreRejected) {
  for (auto key : {"exp", "sessionSlug", "identity"}) {
    auto p = good_payload();
    p.erase(key);
    auto r = sw::verify_token(sign("HS256", p), secret);
    EXPECT_FALSE(r.claims) << key;
    EXPECT_NE(r.reason.find(key), std::string::npos) << r.reason;
  }
}

TEST(Token, EmptyOrWronglyTypedClaimsAreRejected) {
  auto p = good_payload();
  p["identity"] = "";
  EXPECT_FALSE(sw::verify_token(sign("HS256", p), secret).claims);
  p = good_payload();
  p["sessionSlug"] = 42;
  EXPECT_FALSE(sw::verify_token(sign("HS256", p), secret).claims);
  p = good_payload();
  p["exp"] = "tomorrow";
  EXPECT_FALSE(sw::verify_token(sign("HS256", p), secret).claims);
}

TEST(Token, MalformedTokensAreRejected) {
  auto good = sw::mint_token(claims(), secret, now() + 60);
  auto tampered = good;
  tampered[tampered.find('.') + 3] ^= 1;
  for (std::string tok :
       {std::string(""), std::string("abc"), std::string("a.b"), std::string("a.b.c"), std::string("...."),
        b64url("{") + "." + b64url("{}") + ".x", tampered, std::string("\xff\xfe.\x01.\x02"), std::string("a\xff.b.c"),
        std::string("a b.c.d"), std::string(10000, 'a') + ".b.c"}) {
    auto r = sw::verify_token(tok, secret);
    EXPECT_FALSE(r.claims) << tok;
    EXPECT_FALSE(r.reason.empty());
  }
}

// Found by fuzzing (cpp-jwt shifted a negative value decoding a '=' inside a part): refused before decoding.
TEST(Token, PaddingInsideAPartIsMalformed) {
  auto r = sw::verify_token("ceyJiOJizUII1NiJ=9.eySz5XkOOjTZl9.sig", secret);
  EXPECT_FALSE(r.claims);
  EXPECT_EQ(r.reason, "token is malformed");
  EXPECT_FALSE(sw::verify_token("a===.b.c", secret).claims);
}

TEST(Token, PayloadThatIsNotJsonIsRejected) {
  auto tok = b64url(R"({"alg":"HS256","typ":"JWT"})") + "." + b64url("not json") + "." + b64url("sig");
  EXPECT_FALSE(sw::verify_token(tok, secret).claims);
}

TEST(Token, NoServerSecretRejectsEverything) {
  auto r = sw::verify_token(sw::mint_token(claims(), secret, now() + 60), "");
  EXPECT_FALSE(r.claims);
}

}  // namespace
