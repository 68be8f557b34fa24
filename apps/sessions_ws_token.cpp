// sessions-ws-token: mints a transcription token (HS256) like the web app does, for development and tests; with
// --demo-link, prints the browser page's link that carries it.
#include <cctype>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <string>

#include "proto/number.hpp"
#include "proto/token.hpp"

namespace {

// For a query parameter's value: unreserved characters as they are, everything else %XX.
std::string url_encode(const std::string& s) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += hex[ch >> 4];
      out += hex[ch & 15];
    }
  }
  return out;
}

[[noreturn]] void bad(const std::string& what) {
  std::cerr << "sessions-ws-token: " << what << " (see --help)\n";
  std::exit(2);
}

// Seconds from now to the token's expiry: a whole number from 1 to ten years, nothing after it.
long parse_ttl(const std::string& v) {
  constexpr long max_ttl = 10L * 365 * 24 * 3600;
  const auto ttl = sw::whole_number(v, 1, max_ttl);
  if (!ttl)
    bad("--ttl needs a whole number of seconds from 1 to " + std::to_string(max_ttl) + " (ten years), not '" + v + "'");
  return static_cast<long>(*ttl);
}

}  // namespace

int main(int argc, char** argv) {
  sw::token_claims c;
  std::string secret;
  bool link = false;
  std::string base = "http://localhost:3001";
  bool base_given = false;
  long ttl = 3600;
  const char* env = std::getenv("TRANSCRIPTION_JWT_SECRET");
  if (env) secret = env;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) bad(a + " needs a value");
      return argv[++i];
    };
    if (a == "--secret")
      secret = next();
    else if (a == "--room")
      c.session_slug = next();
    else if (a == "--identity")
      c.identity = next();
    else if (a == "--name")
      c.name = next();
    else if (a == "--sub")
      c.user_id = next();
    else if (a == "--session-id")
      c.session_id = next();
    else if (a == "--ttl")
      ttl = parse_ttl(next());
    else if (a == "--demo-link")
      link = true;
    else if (a == "--base-url") {
      base = next();
      base_given = true;
    } else if (a == "--help") {
      std::cout << "Usage: sessions-ws-token --room SLUG --identity ID [--name NAME] [--sub USER] [--session-id ID]\n"
                   "                         [--ttl SECONDS (default 3600; at most ten years)]\n"
                   "                         [--secret S (default: $TRANSCRIPTION_JWT_SECRET)]\n"
                   "                         [--demo-link [--base-url URL (default http://localhost:3001)]]\n"
                   "Prints the token; with --demo-link, the browser page's link instead:\n"
                   "  URL/demo?room=SLUG&name=NAME#token=TOKEN (the token in the fragment never reaches a server log)\n"
                   "Exit codes: 0 printed, 2 bad arguments.\n";
      return 0;
    } else {
      bad("unknown argument '" + a + "'");
    }
  }
  const char* missing = c.session_slug.empty() ? "--room is required"
                        : c.identity.empty()   ? "--identity is required"
                        : secret.empty()       ? "a secret is required: --secret or TRANSCRIPTION_JWT_SECRET"
                                               : nullptr;
  if (missing) bad(missing);
  if (base_given && !link) bad("--base-url is for --demo-link's page link; a token alone has no URL");
  const auto token = sw::mint_token(c, secret, static_cast<std::int64_t>(std::time(nullptr)) + ttl);
  if (!link) {
    std::cout << token << "\n";
    return 0;
  }
  if (base.rfind("http://", 0) != 0 && base.rfind("https://", 0) != 0) {
    bad("--base-url must start with http:// or https://");
  }
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::cout << base << "/demo?room=" << url_encode(c.session_slug)
            << "&name=" << url_encode(c.name.empty() ? c.identity : c.name) << "#token=" << token << "\n";
  return 0;
}
