// The command-line tools as a user runs them: sessions-ws-token mints a token the service accepts, and each tool
// names a bad argument, with exit code 2.
#include <sys/wait.h>

#include <cstdio>
#include <ctime>
#include <string>

#include <gtest/gtest.h>

#include "proto/token.hpp"

namespace {

struct run_result {
  int code = -1;
  std::string out;  // stdout and stderr
};

run_result run(const std::string& command) {
  run_result r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) r.out += buf;
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (!r.out.empty() && r.out.back() == '\n') r.out.pop_back();
  return r;
}

run_result token_cli(const std::string& args, const std::string& env = "env -u TRANSCRIPTION_JWT_SECRET") {
  return run(env + " " SESSIONS_WS_TOKEN_BIN " " + args);
}

TEST(TokenCli, MintsATokenTheServiceAcceptsWithTheAskedLifetime) {
  const auto before = static_cast<std::int64_t>(std::time(nullptr));
  auto r = token_cli("--secret s3cret --room demo --identity alice --name Alice --ttl 600");
  ASSERT_EQ(r.code, 0) << r.out;
  auto check = sw::verify_token(r.out, "s3cret");
  ASSERT_TRUE(check.claims) << check.reason << ": " << r.out;
  EXPECT_EQ(check.claims->session_slug, "demo");
  EXPECT_EQ(check.claims->identity, "alice");
  EXPECT_EQ(check.claims->name, "Alice");
  EXPECT_GE(check.claims->exp, before + 600);
  EXPECT_LE(check.claims->exp, static_cast<std::int64_t>(std::time(nullptr)) + 600);

  auto from_env = token_cli("--room demo --identity bob", "TRANSCRIPTION_JWT_SECRET=from-env");
  ASSERT_EQ(from_env.code, 0) << from_env.out;
  EXPECT_TRUE(sw::verify_token(from_env.out, "from-env").claims);
}

// Each mistake is named (an option that would do nothing too); a lifetime with trailing garbage, out of range or
// overflowing is refused, not read in part.
TEST(TokenCli, EachBadArgumentIsNamedWithExitCodeTwo) {
  const std::string ok = "--secret s --room r --identity i";
  const std::pair<std::string, std::string> cases[] = {
      {"--secret s --identity i", "--room is required"},
      {"--secret s --room r", "--identity is required"},
      {"--room r --identity i", "a secret is required"},
      {ok + " --ttl 10abc", "--ttl needs a whole number of seconds"},
      {ok + " --ttl 0", "--ttl needs a whole number of seconds"},
      {ok + " --ttl -5", "--ttl needs a whole number of seconds"},
      {ok + " --ttl ''", "--ttl needs a whole number of seconds"},
      {ok + " --ttl 99999999999999999999", "--ttl needs a whole number of seconds"},
      {ok + " --ttl 315360001", "--ttl needs a whole number of seconds"},
      {ok + " --ttl", "--ttl needs a value"},
      {ok + " --bogus", "unknown argument '--bogus'"},
      {ok + " --demo-link --base-url ftp://x", "--base-url must start with http:// or https://"},
      {ok + " --base-url http://x", "--base-url is for --demo-link"},
  };
  for (const auto& [args, says] : cases) {
    auto r = token_cli(args);
    EXPECT_EQ(r.code, 2) << args << ": " << r.out;
    EXPECT_NE(r.out.find("sessions-ws-token: " + says), std::string::npos) << args << ": " << r.out;
  }
  auto longest = token_cli(ok + " --ttl 315360000");
  EXPECT_EQ(longest.code, 0) << longest.out;
}

// A --url that is no ws(s) URL is a bad argument, found before anything is read or sent; the message leaves out its
// query (a token can be there).
TEST(StreamCli, AUrlThatIsNoWebSocketUrlIsABadArgument) {
  for (const std::string url : {"http://localhost:3001?token=tok-in-query", "localhost:3001", "ftp://h"}) {
    auto r = run(SESSIONS_WS_STREAM_BIN " --secret s --url '" + url + "' /nonexistent.wav");
    EXPECT_EQ(r.code, 2) << url << ": " << r.out;
    EXPECT_NE(r.out.find("sessions-ws-stream: --url needs a ws:// or wss:// URL"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("tok-in-query"), std::string::npos) << r.out;
  }
}

}  // namespace
