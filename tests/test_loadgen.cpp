// sessions-ws-loadgen (issue 14) run as its own process against a real server: a short run reports what happened
// (every frame found by the embedded fake Gladia through the relay, transcripts, fan-out), refused tokens show as
// 401s, and a server killed under load shows as unexpected closes, each with the exit code that says so.
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket.hpp>

#include "net/client.hpp"
#include "proto/load_tag.hpp"
#include "proto/rapidjson.hpp"
#include "tests/fakes/fake_gladia.hpp"
#include "tests/support/harness.hpp"
#include "tests/support/pki.hpp"

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

std::string loadgen_command(const std::string& args, const std::string& name) {
  return std::string(SESSIONS_WS_LOADGEN_BIN) + " " + args + " --quiet --json " + ::testing::TempDir() + name +
         ".json > " + ::testing::TempDir() + name + ".out 2>&1";
}

// The report of a finished loadgen run named `name`.
outcome report(int status, const std::string& name) {
  outcome o;
  o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream f(::testing::TempDir() + name + ".out");
  std::stringstream ss;
  ss << f.rdbuf();
  o.out = ss.str();
  std::ifstream j(::testing::TempDir() + name + ".json");
  std::stringstream js;
  js << j.rdbuf();
  sw::parse_json(o.json, js.str());
  return o;
}

// Runs the loadgen with `args` (and --json, --quiet) and reads its report.
outcome loadgen(const std::string& args, const std::string& name) {
  return report(std::system(loadgen_command(args, name).c_str()), name);
}

std::int64_t num(const rapidjson::Value& v, const char* k) {
  return v.IsObject() && v.HasMember(k) && v[k].IsNumber() ? static_cast<std::int64_t>(v[k].GetDouble()) : -1;
}

// A run whose participants all stopped cleanly, every frame found once behind the relay and none lost.
void expect_every_frame_once(const outcome& o, std::int64_t participants) {
  ASSERT_EQ(o.exit_code, 0) << o.out;
  const auto& j = o.json;
  ASSERT_TRUE(j.IsObject()) << o.out;
  EXPECT_EQ(num(j, "stoppedCleanly"), participants);
  EXPECT_EQ(num(j, "framesUpstream"), num(j, "framesSent")) << "each frame once";
  EXPECT_EQ(num(j, "lost"), 0);
}

// A server relaying to the Gladia at `url` (the loadgen's embedded fake, or one of the test's own).
// `ack_timeout`, when given: how soon its relays give up on an upstream that acknowledges nothing.
std::unique_ptr<sw::test::harness> relay_server(const std::string& url, std::chrono::milliseconds ack_timeout = {}) {
  return std::make_unique<sw::test::harness>(
      [&](sw::config& c) {
        c.stt_provider = "gladia";
        c.gladia.api_url = url;
        c.gladia.api_key = "fake-gladia-key";
        if (ack_timeout.count()) c.stt_ack_timeout = ack_timeout;
      },
      std::nullopt, true);
}

// Six participants in two rooms of three, through the Gladia relay to the loadgen's own fake upstream: every frame
// sent is found at the upstream, transcripts come back to every member of each room, the verdict is "sustained".
TEST(Loadgen, AShortRunAgainstTheServerExitsZeroWithACorrectReport) {
  const auto upstream = free_port();
  auto h = relay_server("http://127.0.0.1:" + std::to_string(upstream));
  auto o = loadgen("--url ws://127.0.0.1:" + std::to_string(h->port) + " --secret " + sw::test::secret +
                       " --participants 6 --room-size 3 --duration 2 --embedded-upstream " + std::to_string(upstream) +
                       " --server-pid " + std::to_string(::getpid()),
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
  // The server kept up; the tool itself may be late on a machine busy with other tests (then it says so). A sanitized
  // build's latency is the sanitizer's: there the relay bound is not judged (its relay p50 is 3-5 ms alone, against
  // 0.5 in a release build, and once went past 20 ms at p99 while the whole suite ran).
#if defined(__SANITIZE_ADDRESS__)
  const bool sanitized = true;
#else
  const bool sanitized = false;
#endif
  const std::string verdict = j["verdict"].GetString();
  EXPECT_TRUE(verdict == "sustained" || verdict.rfind("tool-bound", 0) == 0 || verdict.rfind("machine-bound", 0) == 0 ||
              (sanitized && verdict == "not sustained: relay p99 above 20 ms"))
      << verdict;
  EXPECT_NE(o.out.find("verdict                            " + verdict), std::string::npos) << o.out;
  // The server is this process: its RSS, and the anonymous part of it (heap, stacks) apart from the code paged in.
  const auto& server = j["server"];
  EXPECT_GT(num(server, "rssKiB"), 0) << o.out;
  EXPECT_GT(num(server, "rssAnonKiB"), 0) << o.out;
  EXPECT_LT(num(server, "rssAnonKiB"), num(server, "rssKiB")) << "the code is file-backed";
  EXPECT_GT(num(server, "rssAnonBeforeKiB"), 0) << o.out;
  EXPECT_NE(o.out.find("server RSS growth per participant"), std::string::npos) << o.out;
  // The embedded fake's share of the tool's CPU, and the hypervisor's steal on both sides (shares of their time).
  EXPECT_GE(j["fakeCpuS"].GetDouble(), 0) << o.out;
  EXPECT_LE(j["fakeCpuS"].GetDouble(), j["toolCpuS"].GetDouble() + 0.02) << "the fake's threads are the tool's";
  ASSERT_TRUE(j.HasMember("steal") && j["steal"].IsObject()) << o.out;
  for (const char* side : {"server", "tool"}) {
    EXPECT_GE(j["steal"][side].GetDouble(), 0) << side;
    EXPECT_LE(j["steal"][side].GetDouble(), 1) << side;
  }
  EXPECT_NE(o.out.find("hypervisor steal (window)"), std::string::npos) << o.out;
  EXPECT_NE(o.out.find("of it the embedded fake Gladia"), std::string::npos) << o.out;
}

double ms_of(const rapidjson::Value& v, const char* k) {
  return v.IsObject() && v.HasMember(k) && v[k].IsNumber() ? v[k].GetDouble() : -1;
}

// The tool's own schedule slips while it is held still (SIGSTOP, 300 ms) during the ramp-up, when one participant of
// four streams. The whole run shows it (schedule lag and relay latency, the embedded fake being held too); the
// steady window (everyone connected, to a frame before the first stop) starts after it and does not; the verdict judges
// the window, so the run is not called "tool-bound" for a slip the load itself never saw.
TEST(Loadgen, TheVerdictJudgesTheSteadyWindowNotTheRampUp) {
  const auto upstream = free_port();
  auto h = relay_server("http://127.0.0.1:" + std::to_string(upstream));
  const std::string name = "loadgen-held";
  const std::string cmd =
      "exec " +
      loadgen_command("--url ws://127.0.0.1:" + std::to_string(h->port) + " --secret " + sw::test::secret +
                          " --participants 4 --ramp 2 --duration 3 --embedded-upstream " + std::to_string(upstream),
                      name);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // a participant streams, so the tool's schedule runs (the window opens only when the fourth connects, 1.5 s after
  // the first): hold the tool still
  const bool first = sw::test::eventually([&] { return sw::test::metric(*h, "net.frames_in") >= 5; }, 10s);
  kill(pid, SIGSTOP);
  std::this_thread::sleep_for(300ms);  // the slip itself, not a wait for an event
  const std::int64_t held_until = sw::monotonic_ns();
  kill(pid, SIGCONT);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(first);
  auto o = report(status, name);
  ASSERT_EQ(o.exit_code, 0) << o.out;
  auto& j = o.json;
  ASSERT_TRUE(j.IsObject() && j.HasMember("steady") && j["steady"].IsObject()) << o.out;
  auto& w = j["steady"];
  ASSERT_TRUE(w.HasMember("window") && w["window"].IsBool() && w["window"].GetBool()) << o.out;
  ASSERT_GT(ms_of(w, "fromNs"), static_cast<double>(held_until)) << "the window opened after the slip\n" << o.out;
  EXPECT_GT(ms_of(w, "toNs"), ms_of(w, "fromNs"));
  EXPECT_NEAR(ms_of(w, "seconds"), 1.5, 0.5) << "3 s of streaming, the last of four joined 1.5 s after the first";

  // the whole run saw the slip: in the schedule (frames due while held) and in the relay (frames sent just before)
  EXPECT_GE(ms_of(j["lagMs"], "max"), 250) << o.out;
  EXPECT_GT(ms_of(j["lagMs"], "p99"), 5) << "enough frames were held for the whole run's p99\n" << o.out;
  EXPECT_GE(ms_of(j["relayFrameMs"], "max"), 250) << o.out;
  // the window did not, and counts only its own frames
  EXPECT_LT(ms_of(w["lagMs"], "max"), 250) << o.out;
  EXPECT_LT(ms_of(w["relayFrameMs"], "max"), 250) << o.out;
  EXPECT_GT(num(w["lagMs"], "count"), 0);
  EXPECT_LT(num(w["lagMs"], "count"), num(j["lagMs"], "count"));
  EXPECT_GT(num(w["relayFrameMs"], "count"), 0);
  EXPECT_LT(num(w["relayFrameMs"], "count"), num(j["relayFrameMs"], "count"));
  EXPECT_LT(num(w["fanoutMs"], "count"), num(j["fanoutMs"], "count"));
  // the verdict is the window's (this machine may still slip inside it while other tests run, or its hypervisor take
  // the CPUs' time: then it says so, with the steal that excuses it)
  const std::string verdict = j["verdict"].GetString();
  if (verdict.rfind("machine-bound", 0) == 0)
    EXPECT_GT(std::max(j["steal"]["server"].GetDouble(), j["steal"]["tool"].GetDouble()), 0.05) << o.out;
  else if (ms_of(w["lagMs"], "p99") <= 5)
    EXPECT_EQ(verdict, "sustained") << o.out;
  else
    EXPECT_EQ(verdict.rfind("tool-bound", 0), 0u) << o.out;
  EXPECT_NE(o.out.find("steady window"), std::string::npos) << o.out;
}

// Against a separate fake upstream (here in the test process, as sessions-ws-fake-gladia would be): the loadgen
// tells it the steady window by GET /window and reads the relay figures, whole run and window, from GET /stats.
TEST(Loadgen, ASeparateFakeUpstreamLearnsTheWindowAndReportsBoth) {
  sw::test::fake_gladia fake(sw::test::fake_gladia::load_options());
  auto h = relay_server(fake.url());
  EXPECT_EQ(sw::net::http_fetch(fake.url() + "/window?from=soon").status, 400u);
  EXPECT_EQ(sw::net::http_fetch(fake.url() + "/window?to=99999999999999999999").status, 400u) << "out of range";
  auto o = loadgen("--url ws://127.0.0.1:" + std::to_string(h->port) + " --secret " + sw::test::secret +
                       " --participants 4 --ramp 4 --duration 2 --upstream-stats " + fake.url(),
                   "loadgen-separate");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  auto& j = o.json;
  EXPECT_EQ(num(j, "framesUpstream"), num(j, "framesSent")) << o.out;
  auto& w = j["steady"];
  ASSERT_TRUE(w.IsObject() && w["window"].GetBool()) << o.out;
  EXPECT_GT(num(w["relayFrameMs"], "count"), 0) << "the fake learned the window\n" << o.out;
  EXPECT_LT(num(w["relayFrameMs"], "count"), num(j["relayFrameMs"], "count")) << o.out;
  EXPECT_EQ(num(j["relayFrameMs"], "count"), num(j, "framesSent")) << o.out;
  const auto figures = fake.load();
  EXPECT_EQ(figures.relay_frame_steady.count(), static_cast<std::uint64_t>(num(w["relayFrameMs"], "count")));
  // The finals it sent, each a row the server stores (bench/soak.sh checks the database against it).
  rapidjson::Document stats;
  sw::parse_json(stats, sw::net::http_fetch(fake.url() + "/stats").body);
  EXPECT_GT(figures.finals, 0u);
  EXPECT_LT(figures.finals, figures.transcripts);
  EXPECT_EQ(num(stats, "finals"), static_cast<std::int64_t>(figures.finals));
}

// A participant whose upstream opens late (its Gladia init answered 503 with Retry-After 1, so the server's relay
// tries again a second later) streams meanwhile, and the server holds that audio until the upstream is open. The
// steady window opens when every participant's STT is ready (its first stt_status "ready"), not at the last connect:
// the audio that waited for the upstream is the ramp-up's, in the whole run's figures and not in the window's.
TEST(Loadgen, TheSteadyWindowOpensWhenEveryUpstreamIsReady) {
  sw::test::fake_gladia fake(sw::test::fake_gladia::load_options());
  fake.fail_inits(1, 503, "1");
  auto h = relay_server(fake.url());
  auto o = loadgen("--url ws://127.0.0.1:" + std::to_string(h->port) + " --secret " + sw::test::secret +
                       " --participants 4 --ramp 20 --duration 3 --upstream-stats " + fake.url(),
                   "loadgen-late-upstream");
  ASSERT_EQ(o.exit_code, 0) << o.out;
  EXPECT_EQ(fake.init_requests(), 5) << "one init answered 503, then tried again";
  auto& j = o.json;
  EXPECT_EQ(num(j, "framesUpstream"), num(j, "framesSent")) << "the held audio went, none lost\n" << o.out;
  EXPECT_EQ(num(j, "lost"), 0) << o.out;
  // the whole run has the audio that waited about a second for the upstream
  EXPECT_GE(ms_of(j["relayFrameMs"], "max"), 700) << o.out;
  // the window began once that upstream was open: about 1.8 s of the 3, not the 2.85 s from the last connect
  auto& w = j["steady"];
  ASSERT_TRUE(w.IsObject() && w["window"].GetBool()) << o.out;
  EXPECT_LT(ms_of(w, "seconds"), 2.3) << o.out;
  EXPECT_GT(ms_of(w, "seconds"), 1.0) << o.out;
  EXPECT_GT(num(w["relayFrameMs"], "count"), 0) << o.out;
  EXPECT_LT(ms_of(w["relayFrameMs"], "max"), 250) << "no frame that waited for the upstream\n" << o.out;
  EXPECT_NE(o.out.find("every participant connected and its STT ready"), std::string::npos) << o.out;
}

// A separate fake serves one load after another: each run starts its figures afresh (POST /reset), so the second
// run's participants, numbered from 0 again, are neither the first's duplicates nor added to its frames.
TEST(Loadgen, ASeparateFakeServesOneRunAfterAnother) {
  sw::test::fake_gladia fake(sw::test::fake_gladia::load_options());
  auto h = relay_server(fake.url());
  const std::string args = "--url ws://127.0.0.1:" + std::to_string(h->port) + " --secret " + sw::test::secret +
                           " --participants 2 --ramp 20 --duration 1 --upstream-stats " + fake.url();
  auto first = loadgen(args, "loadgen-first");
  ASSERT_EQ(first.exit_code, 0) << first.out;
  auto second = loadgen(args, "loadgen-second");
  ASSERT_EQ(second.exit_code, 0) << second.out;
  EXPECT_EQ(num(second.json, "framesUpstream"), num(second.json, "framesSent")) << second.out;
  EXPECT_EQ(num(second.json, "lost"), 0) << second.out;
  EXPECT_EQ(fake.load().duplicates, 0u);
  EXPECT_EQ(fake.load().frames, static_cast<std::uint64_t>(num(second.json, "framesSent")));
  auto o = loadgen("--url ws://127.0.0.1:" + std::to_string(h->port) + " --secret " + sw::test::secret +
                       " --participants 1 --upstream-stats http://127.0.0.1:" + std::to_string(h->port),
                   "loadgen-not-a-fake");
  EXPECT_EQ(o.exit_code, 2) << "the server is no fake upstream\n" << o.out;
  EXPECT_NE(o.out.find("/reset answered HTTP"), std::string::npos) << o.out;
}

// Audio whose acknowledgement never reached the relay is sent again after its reconnect: the upstream then has those
// frames twice. Each counts once: nothing is lost, and the verdict does not say otherwise.
TEST(Loadgen, AFrameTheUpstreamGotTwiceIsNotLost) {
  sw::test::fake_gladia fake(sw::test::fake_gladia::load_options());
  auto h = relay_server(fake.url(), 500ms);
  auto run = std::async(std::launch::async, [&] {
    return loadgen("--url ws://127.0.0.1:" + std::to_string(h->port) + " --secret " + sw::test::secret +
                       " --participants 1 --duration 3 --upstream-stats " + fake.url(),
                   "loadgen-replayed");
  });
  ASSERT_TRUE(sw::test::eventually([&] { return fake.load().frames >= 10; }, 20s)) << "no audio reached the fake";
  fake.withhold_acks(true);  // takes the audio, acknowledges none: the relay reconnects and sends it again
  sw::test::eventually([&] { return fake.ws_connections() >= 2; }, 20s);  // asserted once the run is over
  fake.withhold_acks(false);
  auto o = run.get();
  ASSERT_GE(fake.ws_connections(), 2) << "the relay reconnected\n" << o.out;
  ASSERT_EQ(o.exit_code, 0) << o.out;
  const auto f = fake.load();
  EXPECT_GT(f.duplicates, 0u) << "the replay brought frames the fake had";
  EXPECT_EQ(f.lost, 0u);
  EXPECT_EQ(num(o.json, "framesUpstream"), num(o.json, "framesSent") + static_cast<std::int64_t>(f.duplicates));
  EXPECT_EQ(num(o.json, "lost"), 0) << o.out;
  EXPECT_EQ(std::string(o.json["verdict"].GetString()).find("lost"), std::string::npos) << o.out;
}

// The upstream ends every Gladia session after 1 s of its audio (Gladia's 3-hour limit, shortened): each stream goes
// on in a new session twice, and the run is as clean as one without: every frame found once behind the relay, in
// order, no error.
TEST(Loadgen, SessionsTheUpstreamEndsGoOnInNewOnesWithNothingLost) {
  const auto upstream = free_port();
  auto h = relay_server("http://127.0.0.1:" + std::to_string(upstream));
  auto o = loadgen("--url ws://127.0.0.1:" + std::to_string(h->port) + " --secret " + sw::test::secret +
                       " --participants 4 --room-size 2 --duration 3 --upstream-session-limit 1000"
                       " --embedded-upstream " +
                       std::to_string(upstream),
                   "loadgen-session-limit");
  expect_every_frame_once(o, 4);
  EXPECT_GE(sw::test::metric(*h, "gladia.sessions_renewed"), 8) << o.out;
}

// The upstream loses every Gladia session after 2 s of its audio (the host that ran it went away: the connection
// drops and no reconnect to its url gets through). Each stream goes on in a new session after its retries (which
// outlast the rest of its 3 s, so the new one is not lost again), and the run is as clean as one without: every frame
// found once behind the relay, in order, no error.
TEST(Loadgen, StreamsWhoseSessionsAreLostGoOnInNewOnesWithNothingLost) {
  auto opts = sw::test::fake_gladia::load_options();
  opts.lose_after = std::chrono::milliseconds(2000);  // as --upstream-lose-after 2000
  sw::test::fake_gladia fake(opts);
  auto h = relay_server(fake.url());
  auto o = loadgen("--url ws://127.0.0.1:" + std::to_string(h->port) + " --secret " + sw::test::secret +
                       " --participants 4 --room-size 2 --duration 3 --upstream-stats " + fake.url(),
                   "loadgen-lost-sessions");
  expect_every_frame_once(o, 4);
  EXPECT_EQ(sw::test::metric(*h, "gladia.sessions_lost"), 4) << o.out;
  EXPECT_EQ(fake.sessions(), 8u);
  EXPECT_EQ(sw::test::metric(*h, "gladia.reconnects"), 20) << "five retries each, then a new session";
}

// A final the server recovered at the end (lost in flight with its upstream connection, then delivered from
// post_transcript) was stamped when the upstream first sent it, seconds before: it is counted apart, not as fan-out.
TEST(Loadgen, ARecoveredFinalIsCountedApartNotAsFanOut) {
  sw::test::fake_gladia fake(sw::test::fake_gladia::load_options());
  // The participant's first final completes at 57 600 bytes (session 1's finals are staggered by 6 400): that chunk is
  // taken and its final lost with the connection.
  fake.cut_after(57'599, 0, true);
  auto h = relay_server(fake.url());
  auto o = loadgen("--url ws://127.0.0.1:" + std::to_string(h->port) + " --secret " + sw::test::secret +
                       " --participants 1 --duration 4 --upstream-stats " + fake.url(),
                   "loadgen-recovered");
  ASSERT_GE(fake.ws_connections(), 2) << "the connection was cut\n" << o.out;
  const auto& j = o.json;
  ASSERT_TRUE(j.IsObject()) << o.out;
  EXPECT_EQ(num(j, "recoveredFinals"), 1) << o.out;
  EXPECT_NE(o.out.find("finals recovered"), std::string::npos) << o.out;
  EXPECT_EQ(num(j["fanoutMs"], "count"), num(j, "partials") + num(j, "finals") - 1) << "all but the recovered one";
  EXPECT_LT(j["fanoutMs"]["max"].GetDouble(), 1000) << o.out;
}

// The fake shares the loadgen's core: while its thread waits for the CPU, the relay's chunks wait in the kernel. A
// chunk arrives when the kernel received it, so the relay latency does not hold the tool's queueing: with the fake's
// thread held for 90 ms five times (less than a stream's 100 ms between chunks, so each read takes one chunk of a
// stream), the fake read chunks tens of ms late, and the relay latency of the frames that completed them stays the
// server's own. Counted from the fake's read, the chunk read latest would have a relay latency of its read delay plus
// the server's: above the largest read delay. The server's own stays below it, though under a loaded ASan run it
// reached 65 ms once (against a read delay of 76 ms), so the check is no tighter than that. Over TLS as over plain
// WebSocket (the fake decrypts on the tool's core too; a message counts from the receipt of the read that brought it).
void expect_chunks_counted_from_the_kernel(bool tls) {
  std::optional<sw::test::test_pki> pki;
  auto options = sw::test::fake_gladia::load_options();
  if (tls) {
    pki.emplace();
    ASSERT_TRUE(pki->ok) << "openssl could not create the test PKI";
    options.tls_cert_file = pki->file("server.pem");
    options.tls_key_file = pki->file("server.key");
  }
  sw::test::fake_gladia fake(options);
  sw::test::harness h(
      [&](sw::config& c) {
        c.stt_provider = "gladia";
        c.gladia.api_url = fake.url();
        c.gladia.api_key = "fake-gladia-key";
        if (tls) c.gladia.ca_file = pki->file("ca.pem");
      },
      std::nullopt, true);
  const std::string name = tls ? "loadgen-held-tls-fake" : "loadgen-held-fake";
  // the loadgen reads the fake's figures over HTTPS, trusting the test CA
  const std::string env = tls ? "SSL_CERT_FILE=" + pki->file("ca.pem") + " " : "";
  auto run = std::async(std::launch::async, [&] {
    return report(
        std::system(
            (env + loadgen_command("--url ws://127.0.0.1:" + std::to_string(h.port) + " --secret " + sw::test::secret +
                                       " --participants 4 --ramp 40 --duration 3 --upstream-stats " + fake.url(),
                                   name))
                .c_str()),
        name);
  });
  ASSERT_TRUE(sw::test::eventually([&] { return fake.load().frames >= 50; }, 20s)) << "no audio reached the fake";
  for (int i = 0; i < 5; ++i) {
    fake.hold_threads(90ms);
    std::this_thread::sleep_for(150ms);  // the fault's pattern: held, then free to read
  }
  auto o = run.get();
  ASSERT_EQ(o.exit_code, 0) << o.out;
  const auto f = fake.load();
  EXPECT_EQ(f.lost, 0u);
  ASSERT_EQ(f.read_delay.count(), f.chunks) << "every chunk's receipt came from the kernel";
  EXPECT_GE(f.read_delay.max_us(), 30'000) << "the holds delayed the fake's reads\n" << o.out;
  // In the steady window, where the holds were (the whole run's maximum is a stop's flush of a partial chunk).
  ASSERT_GT(f.relay_message_steady.count(), 0u) << o.out;
  EXPECT_LT(f.relay_message_steady.max_us(), f.read_delay.max_us()) << "a hold counted as relay latency\n" << o.out;
  EXPECT_NE(o.out.find("upstream read delay"), std::string::npos) << o.out;
  EXPECT_GT(num(o.json["upstreamReadDelayMs"], "count"), 0) << o.out;
  EXPECT_GT(num(o.json["upstreamReadDelaySteadyMs"], "count"), 0) << "the window's part, which the verdict judges";
  EXPECT_EQ(static_cast<std::uint64_t>(num(o.json["upstreamReadDelaySteadyMs"], "count")),
            fake.load().read_delay_steady.count());
}

TEST(Loadgen, AChunkArrivesWhenTheKernelReceivedItNotWhenTheFakeGotToReadIt) {
  expect_chunks_counted_from_the_kernel(false);
}

TEST(Loadgen, AChunkOverTlsArrivesWhenTheKernelReceivedItNotWhenTheFakeGotToDecryptIt) {
  expect_chunks_counted_from_the_kernel(true);
}

// The same on the loadgen's side: stopped (SIGSTOP) for 90 ms eight times, it reads transcripts late, and their
// fan-out latency ends when its kernel received them. 90 ms: no participant gets two transcripts emitted apart within
// it (they come a chunk, 100 ms, apart or together), so each late read takes one.
TEST(Loadgen, ATranscriptArrivesWhenTheKernelReceivedItNotWhenTheLoadgenGotToReadIt) {
  sw::test::fake_gladia fake(sw::test::fake_gladia::load_options());
  auto h = relay_server(fake.url());
  const std::string name = "loadgen-stopped";
  // Built before the fork: the child of a threaded process only execs.
  const std::string command =
      "exec " + loadgen_command("--url ws://127.0.0.1:" + std::to_string(h->port) + " --secret " + sw::test::secret +
                                    " --participants 4 --ramp 40 --duration 4 "
                                    "--upstream-stats " +
                                    fake.url(),
                                name);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_TRUE(sw::test::eventually([&] { return fake.load().transcripts >= 8; }, 20s)) << "no transcripts";
  for (int i = 0; i < 8; ++i) {
    kill(pid, SIGSTOP);
    std::this_thread::sleep_for(90ms);  // the fault's pattern: stopped, then free to read
    kill(pid, SIGCONT);
    std::this_thread::sleep_for(100ms);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  auto o = report(status, name);
  ASSERT_EQ(o.exit_code, 0) << o.out;
  auto& delay = o.json["participantReadDelayMs"];
  EXPECT_GE(num(delay, "max"), 30) << "the stops delayed the loadgen's reads\n" << o.out;
  // In the steady window, where the stops are and which the verdict judges. The whole run also holds the streams' ends,
  // where the final a stop makes can come right behind a partial: a stop that falls there has one read take both, the
  // first stamped with the second's receipt (CI's ASan run once saw 46.5 ms there, 4.7 ms in the window).
  ASSERT_TRUE(o.json["steady"]["window"].GetBool()) << o.out;
  EXPECT_LT(o.json["steady"]["fanoutMs"]["max"].GetDouble(), delay["max"].GetDouble() / 2)
      << "a stop counted as fan-out\n"
      << o.out;
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
  // an egress stream is sent no stt_status: connected, it is live, and the steady window opens
  ASSERT_TRUE(o.json.HasMember("steady") && o.json["steady"].IsObject()) << o.out;
  EXPECT_TRUE(o.json["steady"]["window"].GetBool()) << o.out;
  const auto sent_bytes = static_cast<double>(num(o.json, "framesSent")) * 3'840;
  ASSERT_TRUE(sw::test::eventually(
      [&] { return sw::test::field(sw::net::http_fetch(h.http("/metrics")).body, "activeSttRelays") == "0"; }));
  EXPECT_NEAR(static_cast<double>(capture->take().size()), sent_bytes / 6, 256);
}

// wss: the tool reaches a server behind TLS as browsers do, verifying its certificate for the host name against the
// CA it is given; every frame still reaches the upstream once, and every transcript comes back. A certificate the tool
// cannot verify (the system's store, or another CA) fails every connection at its handshake, and the run says so.
TEST(Loadgen, AWssRunVerifiesTheServerAndLosesNothing) {
  sw::test::test_pki pki;
  ASSERT_TRUE(pki.ok) << "openssl could not create the test PKI";
  const auto upstream = free_port();
  sw::test::harness h(
      [&](sw::config& c) {
        c.stt_provider = "gladia";
        c.gladia.api_url = "http://127.0.0.1:" + std::to_string(upstream);
        c.gladia.api_key = "fake-gladia-key";
        c.tls_cert_file = pki.file("server.pem");
        c.tls_key_file = pki.file("server.key");
      },
      std::nullopt, true);
  const std::string run = "--url wss://localhost:" + std::to_string(h.port) + " --secret " + sw::test::secret +
                          " --participants 4 --room-size 2 --duration 2 --embedded-upstream " +
                          std::to_string(upstream);
  auto o = loadgen(run + " --ca " + pki.file("ca.pem"), "loadgen-wss");
  expect_every_frame_once(o, 4);
  EXPECT_NEAR(static_cast<double>(num(o.json, "framesSent")), 4 * 2 * 50, 4 * 3) << "2 s of 20 ms frames each";
  EXPECT_GE(num(o.json, "finals"), 4 * 2) << "a final per 2 s and one at the stop, seen by both members of a room";
  EXPECT_EQ(num(o.json["fanoutMs"], "count"), num(o.json, "partials") + num(o.json, "finals"));
  EXPECT_TRUE(o.json["toolSends"]["tls"].GetBool());
  EXPECT_NE(o.out.find("a TLS write per frame (wss)"), std::string::npos) << o.out;
  for (const auto& [name, args] : {std::pair<std::string, std::string>{"loadgen-wss-system-cas", run},
                                   {"loadgen-wss-other-ca", run + " --ca " + pki.file("other-ca.pem")}}) {
    auto refused = loadgen(args, name);
    EXPECT_EQ(refused.exit_code, 1) << refused.out;
    EXPECT_EQ(num(refused.json, "connected"), 0) << refused.out;
    EXPECT_NE(refused.out.find("TLS handshake: certificate verify failed"), std::string::npos) << refused.out;
  }
}

TEST(Loadgen, BadArgumentsExitTwo) {
  EXPECT_EQ(loadgen("--participants zero", "loadgen-bad").exit_code, 2);
  EXPECT_EQ(loadgen("--url http://x --secret s", "loadgen-bad2").exit_code, 2);
  EXPECT_EQ(loadgen("--frame-ms 5 --secret s", "loadgen-bad3").exit_code, 2);
  EXPECT_EQ(loadgen("--sndbuf 10 --secret s", "loadgen-bad4").exit_code, 2);
  EXPECT_EQ(loadgen("--upstream-session-limit 1000 --secret s", "loadgen-bad5").exit_code, 2) << "no embedded fake";
  EXPECT_EQ(loadgen("--upstream-lose-after 1000 --secret s", "loadgen-bad6").exit_code, 2) << "no embedded fake";
  EXPECT_EQ(loadgen("--upstream-lose-after 50 --embedded-upstream 1 --secret s", "loadgen-bad7").exit_code, 2)
      << "below 100 ms";
  EXPECT_EQ(loadgen("--url ws://127.0.0.1:1/api --secret s", "loadgen-bad8").exit_code, 2) << "a path";
  EXPECT_EQ(loadgen("--url ws://127.0.0.1:1 --ca /etc/hostname --secret s", "loadgen-bad9").exit_code, 2)
      << "a CA for plain ws";
  auto no_ca = loadgen("--url wss://localhost:1 --ca /nonexistent.pem --secret s", "loadgen-bad10");
  EXPECT_EQ(no_ca.exit_code, 2);
  EXPECT_NE(no_ca.out.find("cannot load CA /nonexistent.pem"), std::string::npos) << no_ca.out;
  EXPECT_EQ(loadgen("--url wss://localhost:1 --floor --secret s", "loadgen-bad11").exit_code, 2) << "no TLS there";
}

// The frames due in a tick go to the kernel in one io_uring submission, and what a full socket does not take from it is
// written later, whole and in order. The receiver here is strict (Beast reads every frame: masked, well formed). With
// a small receive buffer it does not read until what waits in it has stopped growing for longer than the tool's small
// send buffer takes to fill (so the tool's sends come back short or with EAGAIN); then every frame must still arrive,
// each participant's in sequence, as many as the tool reports sent.
TEST(Loadgen, ATicksFramesGoInOneSubmissionAndWhatAFullSocketRefusesArrivesLaterInOrder) {
  namespace websocket = boost::beast::websocket;
  constexpr int participants = 100;
  // the tool's send buffers are 4 KiB (the kernel doubles it): full after 13 frames of 640 bytes, and a few more
  constexpr int sndbuf = 4096, fill_periods = 2 * sndbuf / 640 + 5;
  boost::asio::io_context io;
  boost::asio::ip::tcp::acceptor acceptor(io);
  acceptor.open(boost::asio::ip::tcp::v4());
  acceptor.set_option(boost::asio::socket_base::receive_buffer_size(4096));  // accepted sockets inherit it
  acceptor.bind({boost::asio::ip::make_address("127.0.0.1"), 0});
  acceptor.listen();
  const auto port = acceptor.local_endpoint().port();
  std::mutex m;
  std::vector<std::string> problems;
  std::atomic<std::uint64_t> frames{0};
  std::vector<std::thread> readers;
  std::thread accepting([&] {
    for (int i = 0; i < participants; ++i) {
      auto sock = std::make_shared<boost::asio::ip::tcp::socket>(io);
      boost::system::error_code ec;
      acceptor.accept(*sock, ec);
      if (ec) return;
      readers.emplace_back([&, sock] {
        websocket::stream<boost::asio::ip::tcp::socket&> ws(*sock);
        boost::system::error_code e;
        ws.accept(e);
        // not reading until the sender is stuck: the bytes waiting here the same for longer than its send buffer
        // takes to fill (bounded)
        int same = 0, waiting = -1;
        for (int polls = 0; polls < 500 && same < fill_periods; ++polls) {
          std::this_thread::sleep_for(20ms);
          int now = 0;
          ioctl(sock->native_handle(), FIONREAD, &now);
          same = now > 0 && now == waiting ? same + 1 : 0;
          waiting = now;
        }
        std::uint32_t expect = 0, who = 0;
        boost::beast::flat_buffer b;
        for (;;) {
          b.clear();
          ws.read(b, e);
          if (e) break;  // the tool ends each connection by closing its socket
          const auto* p = static_cast<const std::uint8_t*>(b.data().data());
          sw::load_tag tag;  // not an optional: GCC 12 at -O2 took its value for uninitialized (-Wmaybe-uninitialized)
          bool tagged = false;
          if (b.size() >= sw::load_tag::size) {
            if (auto t = sw::read_load_tag(p)) {
              tag = *t;
              tagged = true;
            }
          }
          std::lock_guard<std::mutex> l(m);
          if (!ws.got_binary() || !tagged || tag.frame_bytes != b.size()) {
            problems.push_back("not a tagged frame of its own size");
            break;
          }
          if (expect == 0) who = tag.participant;
          if (tag.participant != who || tag.sequence != expect) {
            problems.push_back("participant " + std::to_string(who) + ": frame " + std::to_string(tag.sequence) +
                               " where " + std::to_string(expect) + " was due");
            break;
          }
          ++expect;
          ++frames;
        }
        if (e && e != websocket::error::closed && e != boost::asio::error::eof &&
            e != boost::asio::error::connection_reset) {
          std::lock_guard<std::mutex> l(m);
          problems.push_back("read: " + e.message());
        }
      });
    }
  });
  auto o = loadgen("--url ws://127.0.0.1:" + std::to_string(port) + " --secret " + sw::test::secret +
                       " --floor --participants " + std::to_string(participants) +
                       " --ramp 10000 --duration 4 --sndbuf " + std::to_string(sndbuf),
                   "loadgen-uring");
  accepting.join();
  for (auto& t : readers) t.join();
  ASSERT_TRUE(o.json.IsObject()) << o.out;
  const auto& sends = o.json["toolSends"];
  ASSERT_TRUE(sends.IsObject()) << o.out;
  if (!sends["ioUring"].GetBool()) GTEST_SKIP() << "the kernel refuses io_uring here: " << o.out;
  EXPECT_EQ(num(o.json, "connected"), participants) << o.out;
  EXPECT_TRUE(problems.empty()) << problems.front();
  EXPECT_EQ(static_cast<std::int64_t>(frames.load()), num(o.json, "framesSent")) << o.out;
  // frames due while a connection's refused rest is still being written go after it, one by one; the others in batches
  EXPECT_LE(num(sends, "batchedFrames"), num(o.json, "framesSent"));
  EXPECT_GE(num(sends, "batchedFrames") * 2, num(o.json, "framesSent"));
  EXPECT_GT(num(sends, "notTakenWhole"), 0) << "the full sockets refused some frames: " << o.out;
  // a hundred participants on a 20 ms wheel: several frames a submission
  EXPECT_LE(num(sends, "submissions") * 3, num(sends, "batchedFrames")) << o.out;
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
