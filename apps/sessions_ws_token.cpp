// sessions-ws-token: mints a transcription token (HS256) like the web app does, for development and tests.
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <string>

#include "proto/token.hpp"

int main(int argc, char** argv) {
  sw::token_claims c;
  std::string secret;
  long ttl = 3600;
  const char* env = std::getenv("TRANSCRIPTION_JWT_SECRET");
  if (env) secret = env;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "sessions-ws-token: " << a << " needs a value\n";
        std::exit(2);
      }
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
      ttl = std::atol(next().c_str());
    else if (a == "--help") {
      std::cout << "Usage: sessions-ws-token --room SLUG --identity ID [--name NAME] [--sub USER] [--session-id ID]\n"
                   "                         [--ttl SECONDS] [--secret S (default: $TRANSCRIPTION_JWT_SECRET)]\n";
      return 0;
    } else {
      std::cerr << "sessions-ws-token: unknown argument '" << a << "'\n";
      return 2;
    }
  }
  if (secret.empty() || c.session_slug.empty() || c.identity.empty() || ttl <= 0) {
    std::cerr << "sessions-ws-token: --room, --identity, a positive --ttl and a secret are required (see --help)\n";
    return 2;
  }
  std::cout << sw::mint_token(c, secret, static_cast<std::int64_t>(std::time(nullptr)) + ttl) << "\n";
  return 0;
}
