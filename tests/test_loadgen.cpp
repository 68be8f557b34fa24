// sessions-ws-loadgen (issue 14) run as its own process against a real server: a short run reports what happened
// (every frame found by the embedded fake Gladia through the relay, transcripts, fan-out), refused tokens show as
// 401s, and a server killed under load shows as unexpected closes, each with the exit code that says so.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>

#include "net/client.hpp"
#include "proto/rapidjson.hpp"
#include "tests/support/harness.hpp"

namespace {

using namespace std::chrono_literals;

std::uint16_t free_port() {
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor a(io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  return a.local_endpoint().port();
}

struct outcome {
  int exit_code = -1;
  std::string out;
  rapidjson::Document json;
};

// Runs the loadgen with `args` (and --json, --quiet) and reads its report.
outcome loadgen(const std::string& args, const std::string& name) {
  const std::string json = ::testing::TempDir() + name + ".json", out = ::testing::TempDir() + name + ".out";
  const std::string cmd =
      std::string(SESSIONS_WS_LOADGEN_BIN) + " " + args + " --quiet --json " + json + " > " + out + " 2>&1";
  outcome o;
  const int status = std::system(cmd.c_str());
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream f(out);
  std::stringstream ss;
  ss << f.rdbuf();
  o.out = ss.str();
  std::ifstream j(json);
  std::stringstream js;
  js << j.rdbuf();
  sw::parse_json(o.json, js.str());
  return o;
}

std::int64_t num(const rapidjson::Value& v, const char* k) {
  return v.IsObject() && v.HasMember(k) && v[k].IsNumber() ? static_cast<std::int64_t>(v[k].GetDouble()) : -1;
}

// Six participants in two rooms of three, through the Gladia relay to the loadgen's own fake upstream: every frame
// sent is found at the upstream, transcripts come back to every member of each room, the verdict is "sustained".
TEST(Loadgen, AShortRunAgainstTheServerExitsZeroWithACorrectReport) {
  const auto upstream = free_port();
  sw::test::harness h(
      [&](sw::config& c) {
        c.stt_provider = "gladia";
        c.gladia.api_url = "http://127.0.0.1:" + std::to_string(upstream);
        c.gladia.api_key = "fake-gladia-key";
      },
      std::nullopt, true);
  auto o = loadgen("--url ws://127.0.0.1:" + std::to_string(h.port) + " --secret " + sw::test::secret +
                       " --participants 6 --room-size 3 --duration 2 --embedded-upstream " + std::to_string(upstream),
                   "loadgen-short");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  ASSERT_TRUE(o.json.IsObject()) << o.out;
  auto& j = o.json;
  EXPECT_EQ(num(j, "connected"), 6);
  EXPECT_EQ(num(j, "stoppedCleanly"), 6);
  EXPECT_NEAR(static_cast<double>(num(j, "framesSent")), 6 * 2 * 50, 6 * 3) << "2 s of 20 ms frames each";
  EXPECT_EQ(num(j, "framesUpstream"), num(j, "framesSent")) << "every tag found behind the relay";
  EXPECT_EQ(num(j, "lost"), 0);
  EXPECT_GT(num(j["relayMs"], "p99"), -1);
  EXPECT_GE(num(j, "finals"), 6 * 3) << "a final per 2 s and one at the stop, seen by the three members of a room";
  EXPECT_GT(num(j, "partials"), 0);
  EXPECT_EQ(num(j["fanoutMs"], "count"), num(j, "partials") + num(j, "finals")) << "every transcript was stamped";
  // The server kept up; the tool itself may be late on a machine busy with other tests (then it says so).
  const std::string verdict = j["verdict"].GetString();
  EXPECT_TRUE(verdict == "sustained" || verdict.rfind("tool-bound", 0) == 0) << verdict;
  EXPECT_NE(o.out.find("verdict                            " + verdict), std::string::npos) << o.out;
}

TEST(Loadgen, RefusedTokensShowAs401sAndFailTheRun) {
  sw::test::harness h;
  auto o = loadgen(
      "--url ws://127.0.0.1:" + std::to_string(h.port) + " --secret not-the-secret --participants 3 --duration 1",
      "loadgen-401");
  EXPECT_EQ(o.exit_code, 1) << o.out;
  EXPECT_EQ(num(o.json, "rejected"), 3);
  EXPECT_EQ(num(o.json, "connected"), 0);
  EXPECT_NE(o.out.find("rejected with HTTP"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("401"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("not sustained"), std::string::npos) << o.out;
}

// As LiveKit egress: 48 kHz stereo to /egress/audio with this service's egress tokens, ended by a close without
// status; the server's relays get the audio at 16 kHz mono (a third of the samples, half the channels).
TEST(Loadgen, EgressConnectionsStreamToEgressAudio) {
  auto capture = std::make_shared<sw::test::audio_capture>();
  sw::test::echo_options eo;
  eo.capture = capture;
  sw::test::harness h({}, sw::test::echo_provider(eo));
  auto o = loadgen("--url ws://127.0.0.1:" + std::to_string(h.port) + " --secret " + h.cfg.service_api_secret +
                       " --egress --participants 2 --duration 1",
                   "loadgen-egress");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  EXPECT_EQ(num(o.json, "connected"), 2);
  EXPECT_EQ(num(o.json, "stoppedCleanly"), 2);
  const auto sent_bytes = static_cast<double>(num(o.json, "framesSent")) * 3'840;
  ASSERT_TRUE(sw::test::eventually(
      [&] { return sw::test::field(sw::net::http_fetch(h.http("/metrics")).body, "activeSttRelays") == "0"; }));
  EXPECT_NEAR(static_cast<double>(capture->take().size()), sent_bytes / 6, 256);
}

TEST(Loadgen, BadArgumentsExitTwo) {
  EXPECT_EQ(loadgen("--participants zero", "loadgen-bad").exit_code, 2);
  EXPECT_EQ(loadgen("--url http://x --secret s", "loadgen-bad2").exit_code, 2);
  EXPECT_EQ(loadgen("--frame-ms 5 --secret s", "loadgen-bad3").exit_code, 2);
}

// The server dies (SIGKILL) while participants stream: each shows as an unexpected close, not as a quiet run.
TEST(Loadgen, AKilledServerShowsAsUnexpectedCloses) {
  const auto port = free_port();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("PORT", std::to_string(port).c_str(), 1);
    setenv("HOST", "127.0.0.1", 1);
    setenv("TRANSCRIPTION_JWT_SECRET", sw::test::secret.c_str(), 1);
    setenv("DATABASE_URL", "none", 1);
    setenv("STT_PROVIDER", "local", 1);
    setenv("LOG_LEVEL", "error", 1);
    freopen("/dev/null", "w", stderr);
    execl(SESSIONS_WS_BIN, SESSIONS_WS_BIN, static_cast<char*>(nullptr));
    _exit(127);
  }
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  ASSERT_TRUE(sw::test::eventually(
      [&] {
        try {
          return sw::net::http_fetch(base + "/health").status == 200;
        } catch (const std::exception&) {
          return false;
        }
      },
      10s));
  outcome o;
  std::thread run([&] {
    o = loadgen("--url ws://127.0.0.1:" + std::to_string(port) + " --secret " + sw::test::secret +
                    " --participants 4 --duration 30",
                "loadgen-killed");
  });
  // all four streaming, then the server dies
  const bool streaming = sw::test::eventually(
      [&] { return sw::test::field(sw::net::http_fetch(base + "/metrics").body, "activeConnections") == "4"; }, 10s);
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  run.join();
  ASSERT_TRUE(streaming);
  EXPECT_EQ(o.exit_code, 1) << o.out;
  EXPECT_EQ(num(o.json, "connected"), 4);
  EXPECT_EQ(num(o.json, "unexpectedCloses"), 4) << o.out;
  EXPECT_EQ(num(o.json["closeCodes"], "1006"), 4) << o.out;
  EXPECT_NE(o.out.find("unexpected close"), std::string::npos) << o.out;
}

}  // namespace
