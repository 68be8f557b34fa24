// The executable as an operator runs it: starts on the configured port, serves, and exits 0 on SIGTERM
// after closing streams with 1001.
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#include <cstdio>

#include <gtest/gtest.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include "service/fatal_signal.hpp"
#include "tests/support/harness.hpp"
#include "tests/support/pki.hpp"

namespace {

using namespace std::chrono_literals;

int free_port() {
  // Let the kernel pick: bind a harness on port 0, read it, release it.
  sw::test::harness probe({}, std::nullopt);
  return probe.port;
}

// In the forked child, before exec: the service's environment for a run on `port` without a database.
void service_env(int port) {
  setenv("PORT", std::to_string(port).c_str(), 1);
  setenv("HOST", "127.0.0.1", 1);
  setenv("TRANSCRIPTION_JWT_SECRET", sw::test::secret.c_str(), 1);
  setenv("DATABASE_URL", "none", 1);
}

TEST(Process, ServesAndExitsZeroOnSigterm) {
  int port = free_port();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    service_env(port);
    setenv("LOG_LEVEL", "error", 1);
    freopen("/dev/null", "w", stderr);
    execl(SESSIONS_WS_BIN, SESSIONS_WS_BIN, static_cast<char*>(nullptr));
    _exit(127);
  }
  std::string base = "http://127.0.0.1:" + std::to_string(port);
  bool up = false;
  for (int i = 0; i < 200 && !up; ++i) {
    try {
      up = sw::net::http_fetch(base + "/health").status == 200;
    } catch (const std::exception&) {
      std::this_thread::sleep_for(25ms);
    }
  }
  ASSERT_TRUE(up);
  auto c = sw::net::ws_client::connect("ws://127.0.0.1:" + std::to_string(port) +
                                       "/api/realtime/transcribe?token=" + sw::test::harness::token("room", "alice"));
  sw::test::expect_message(*c, "connected");
  kill(pid, SIGTERM);
  EXPECT_EQ(sw::test::expect_close(*c, 5000), 1001);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Process, PortInUseIsAClearError) {
  sw::test::harness h({}, std::nullopt);
  std::string cmd = "PORT=" + std::to_string(h.port) +
                    " HOST=127.0.0.1 DATABASE_URL=none TRANSCRIPTION_JWT_SECRET=x " SESSIONS_WS_BIN " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_TRUE(p);
  std::string out;
  char buf[256];
  while (fgets(buf, sizeof buf, p)) out += buf;
  int rc = pclose(p);
  EXPECT_EQ(WEXITSTATUS(rc), 1);
  EXPECT_NE(out.find("cannot listen"), std::string::npos) << out;
}

}  // namespace

namespace {

// The embedded defaults, as `script/server` runs them: offline STT and a SQLite file under ./data. After a
// finished stream and a SIGTERM, the file holds the stream's transcript and one usage row.
// SIGHUP loads the TLS certificate and key again (a renewal: certbot's deploy hook, `systemctl reload`): new
// connections get the new pair, the process goes on; files that do not load leave the pair in use serving, and the
// log says why. SIGTERM still ends it with 0.
TEST(Process, SighupLoadsARenewedCertificate) {
  sw::test::test_pki pki;
  ASSERT_TRUE(pki.ok);
  const auto cert = (pki.dir / "live-cert.pem").string(), key = (pki.dir / "live-key.pem").string();
  auto install = [&](const char* c, const char* k) {
    std::filesystem::copy_file(pki.file(c), cert, std::filesystem::copy_options::overwrite_existing);
    std::filesystem::copy_file(pki.file(k), key, std::filesystem::copy_options::overwrite_existing);
  };
  install("server.pem", "server.key");
  const auto log_file = (pki.dir / "stderr.log").string();
  int port = free_port();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    service_env(port);
    setenv("TLS_CERT_FILE", cert.c_str(), 1);
    setenv("TLS_KEY_FILE", key.c_str(), 1);
    if (!freopen(log_file.c_str(), "w", stderr)) _exit(126);
    execl(SESSIONS_WS_BIN, SESSIONS_WS_BIN, static_cast<char*>(nullptr));
    _exit(127);
  }
  const std::string base = "https://localhost:" + std::to_string(port) + "/health";
  sw::net::client_options first, renewed;
  first.ca_file = pki.file("ca.pem");
  renewed.ca_file = pki.file("other-ca.pem");
  auto serves = [&](const sw::net::client_options& trust) {
    try {
      return sw::net::http_fetch(base, "GET", "", {}, trust).status == 200;
    } catch (const std::exception&) {
      return false;
    }
  };
  auto logged = [&](const std::string& needle) {
    std::ifstream in(log_file);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return all.find(needle) != std::string::npos;
  };
  ASSERT_TRUE(sw::test::eventually([&] { return serves(first); }));
  install("server2.pem", "server2.key");
  kill(pid, SIGHUP);
  EXPECT_TRUE(sw::test::eventually([&] { return serves(renewed); }));
  EXPECT_TRUE(logged("SIGHUP: TLS certificate and key loaded again"));
  EXPECT_FALSE(serves(first));
  std::ofstream(key, std::ios::trunc) << "not a key\n";
  kill(pid, SIGHUP);
  EXPECT_TRUE(sw::test::eventually([&] { return logged("cannot load TLS certificate/key"); }));
  EXPECT_TRUE(serves(renewed));
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

TEST(Process, DefaultsLeaveAReadableSqliteFileWithTheTranscript) {
  auto dir = std::filesystem::temp_directory_path() / ("sw-defaults-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  int port = free_port();
  std::vector<std::string> env = {"PORT=" + std::to_string(port), "HOST=127.0.0.1",
                                  "TRANSCRIPTION_JWT_SECRET=" + sw::test::secret, "LOG_LEVEL=error"};
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  char* argv[] = {const_cast<char*>(SESSIONS_WS_BIN), nullptr};
  auto cwd = dir.string();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::chdir(cwd.c_str()) != 0) _exit(126);
    ::execve(SESSIONS_WS_BIN, argv, envp.data());
    _exit(127);
  }
  bool up = false;
  for (int i = 0; i < 200 && !up; ++i) {
    try {
      up = sw::net::http_fetch("http://127.0.0.1:" + std::to_string(port) + "/health").status == 200;
    } catch (const std::exception&) {
      std::this_thread::sleep_for(25ms);
    }
  }
  ASSERT_TRUE(up);
  std::string cmd = std::string(SESSIONS_WS_STREAM_BIN) + " --fast --url ws://127.0.0.1:" + std::to_string(port) +
                    " --secret " + sw::test::secret +
                    " /usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0930.wav "
                    "2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_TRUE(p);
  std::string out;
  char buf[256];
  while (fgets(buf, sizeof buf, p)) out += buf;
  EXPECT_EQ(WEXITSTATUS(pclose(p)), 0);
  ASSERT_NE(out.find("[cli] "), std::string::npos) << out;
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_EQ(WEXITSTATUS(status), 0);
  auto db = (dir / "data" / "sessions.db").string();
  ASSERT_TRUE(std::filesystem::exists(db));
  soci::session s(soci::sqlite3, "db=" + db);
  std::string text;
  long long usage = 0;
  s << R"(SELECT group_concat("text", ' ') FROM "TranscriptSegment")", soci::into(text);
  s << R"(SELECT count(*) FROM "TranscriptionUsage")", soci::into(usage);
  EXPECT_NE(out.find(text.substr(0, 10)), std::string::npos) << "stored: " << text << "\nprinted: " << out;
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(usage, 1);
  std::filesystem::remove_all(dir);
}

}  // namespace

namespace {

// The actors the service cannot run without are supervised: one that ends while the service runs turns /health
// and /ready to 503 and asks the owner to stop (the executable then exits 1, to be restarted).
TEST(Supervision, APersistenceActorThatEndsIsAFailureTheOwnerHearsOf) {
  sw::test::harness h;  // SQLite persistence, as by default
  std::mutex mu;
  std::vector<std::string> failures;
  h.svc->on_failure([&](const std::string& why) {
    std::lock_guard<std::mutex> lock(mu);
    failures.push_back(why);
  });
  EXPECT_EQ(sw::net::http_fetch(h.http("/health")).status, 200u);
  caf::anon_send_exit(h.svc->context().persistence, caf::exit_reason::kill);
  for (int i = 0; i < 200; ++i) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!failures.empty()) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(failures.size(), 1u);
    EXPECT_NE(failures[0].find("persistence"), std::string::npos) << failures[0];
  }
  auto health = sw::net::http_fetch(h.http("/health"));
  EXPECT_EQ(health.status, 503u) << health.body;
  EXPECT_EQ(sw::test::field(health.body, "status"), "error") << health.body;
  EXPECT_NE(sw::test::field(health.body, "error").find("persistence"), std::string::npos) << health.body;
  auto ready = sw::net::http_fetch(h.http("/ready"));
  EXPECT_EQ(ready.status, 503u) << ready.body;
  h.svc->shutdown();
  std::lock_guard<std::mutex> lock(mu);
  EXPECT_EQ(failures.size(), 1u) << "the owner hears of a failure once";
}

// Once the gateway actor is gone nothing counts the streams down or tells them to stop: a shutdown that waited
// for them would sit out its whole bound before the process could restart.
TEST(Supervision, ANetworkActorThatEndsDoesNotHoldTheShutdownForItsBound) {
  sw::test::harness h([](sw::config& c) { c.shutdown_timeout = std::chrono::milliseconds(20'000); });
  std::atomic<int> failures{0};
  h.svc->on_failure([&](const std::string&) { ++failures; });
  auto c = h.connect("room", "alice");
  sw::test::expect_message(*c, "ready");
  caf::anon_send_exit(h.svc->gateway(), caf::exit_reason::kill);
  for (int i = 0; i < 200 && failures.load() == 0; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_EQ(failures.load(), 1);
  auto t0 = std::chrono::steady_clock::now();
  h.svc->shutdown();  // the stream is still open, and nobody will end it
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, 6s) << "shutdown waited " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                      << " ms";
}

TEST(Supervision, AShutdownIsNotAFailure) {
  std::atomic<int> failures{0};
  {
    sw::test::harness h;
    h.svc->on_failure([&](const std::string&) { ++failures; });
    auto c = h.connect("quiet-room", "alice");
    sw::test::expect_message(*c, "ready");
    // The client answers the close, so that the shutdown ends at once. (The service is shut down on the thread
    // that started it: CAF 0.17's actor system waits for its logger, which that thread holds, in its destructor.)
    auto closed = std::async(std::launch::async, [&] { return sw::test::expect_close(*c); });
    EXPECT_TRUE(h.svc->shutdown());
    EXPECT_EQ(closed.get(), 1001);
  }
  EXPECT_EQ(failures.load(), 0);
}

// What the log's throttle left out in the service's last second is counted as it shuts down, not lost with it.
TEST(Supervision, AShutdownCountsWhatTheLogLeftOut) {
  sw::test::harness h;
  auto log = sw::test::capture_log(h);
  h.svc->context().metrics->error("test.kind", "test: the first of two");
  h.svc->context().metrics->error("test.kind", "test: the second of two");
  EXPECT_TRUE(h.svc->shutdown());
  EXPECT_EQ(log->all(),
            "test: the first of two\n"
            "test.kind: 1 more of this kind in the last seconds, not logged one by one\n");
}

}  // namespace

namespace {

// A fault that kills the process leaves its reason in the log: the signal and a backtrace, then the process dies of
// that signal as it would have without the handler.
TEST(Process, AFatalSignalIsLoggedWithABacktraceBeforeTheProcessDies) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "sanitized builds keep the sanitizers' own fatal-signal reports";
#else
  int port = free_port();
  int err[2];
  ASSERT_EQ(::pipe(err), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    service_env(port);
    ::dup2(err[1], 2);
    ::close(err[0]);
    execl(SESSIONS_WS_BIN, SESSIONS_WS_BIN, static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(err[1]);
  std::string log;
  char buf[4096];
  while (log.find("listening on") == std::string::npos) {  // started: the handlers are in place
    auto n = ::read(err[0], buf, sizeof buf);
    ASSERT_GT(n, 0) << log;
    log.append(buf, static_cast<std::size_t>(n));
  }
  ::kill(pid, SIGSEGV);  // as a fault would raise it
  for (ssize_t n; (n = ::read(err[0], buf, sizeof buf)) > 0;) log.append(buf, static_cast<std::size_t>(n));
  ::close(err[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << log;
  EXPECT_EQ(WTERMSIG(status), SIGSEGV);
  EXPECT_NE(log.find("sessions-ws: fatal SIGSEGV (signal 11); backtrace:"), std::string::npos) << log;
  EXPECT_NE(log.find("sessions-ws("), std::string::npos) << "frames of the executable follow: " << log;
#endif
}

#if !defined(__SANITIZE_ADDRESS__)
// Deep enough to overflow any thread's stack; never a loop (the frame is used after the call).
volatile int recursion_limit = 1 << 30;  // never reached: a stack is exhausted long before

__attribute__((noinline)) int recurse_forever(int depth) {
  if (depth >= recursion_limit) return 0;
  volatile char frame[4096];
  frame[0] = static_cast<char>(depth);
  return recurse_forever(depth + 1) + frame[0];
}

// In a death test's child: the service with the handlers installed, then a stack overflow on one of its threads.
// Its database and journal go where the test (its parent) removes them: the child never gets to.
std::filesystem::path overflow_dir(pid_t test_process) {
  return std::filesystem::temp_directory_path() / ("sw-overflow-" + std::to_string(test_process));
}

[[noreturn]] void overflow_on_a_service_thread(bool detached) {
  sw::install_fatal_signal_handlers();
  sw::test::harness h([](sw::config& c) {
    c.sqlite_path = (overflow_dir(::getppid()) / "sessions.db").string();
    c.persist_journal_dir = (overflow_dir(::getppid()) / "journal").string();
  });
  auto work = [] { recurse_forever(0); };
  if (detached)
    h.svc->system().spawn<caf::detached>(work);
  else
    h.svc->system().spawn(work);
  std::promise<void>().get_future().wait_for(30s);  // the overflow ends the process long before
  std::_Exit(0);
}
#endif

// A stack overflow on a thread other than main (the probe's crash: an actor worker) is reported as well: every
// thread of the service has an alternate signal stack for the handler to run on. Without one, the kernel could not
// run the handler on the exhausted stack and the process would die without a word.
TEST(Process, AStackOverflowOnAnActorThreadIsLogged) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "sanitized builds keep the sanitizers' own fatal-signal reports";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(overflow_on_a_service_thread(false), testing::KilledBySignal(SIGSEGV),
              "sessions-ws: fatal SIGSEGV \\(signal 11\\); backtrace:");
  EXPECT_EXIT(overflow_on_a_service_thread(true), testing::KilledBySignal(SIGSEGV),
              "sessions-ws: fatal SIGSEGV \\(signal 11\\); backtrace:");
  std::error_code ec;
  std::filesystem::remove_all(overflow_dir(::getpid()), ec);
#endif
}

}  // namespace

namespace {

// sessions-ws-stream --watch prints what the room says to a terminal. A participant's display name comes from its
// token and reaches every viewer as it is: control characters in it (an escape sequence that retitles, clears or
// rewrites the viewer's terminal) are printed as U+FFFD, never passed to the terminal.
TEST(StreamCli, AViewerPrintsTheRoomsFinalsWithoutTheControlCharactersOfANameOrText) {
  auto h = std::make_unique<sw::test::harness>();
  const std::string cmd = std::string(SESSIONS_WS_STREAM_BIN) +
                          " --watch 0 --url ws://127.0.0.1:" + std::to_string(h->port) + " --secret " +
                          sw::test::secret + " --room room --identity viewer 2>&1";
  FILE* viewer = popen(cmd.c_str(), "r");
  ASSERT_TRUE(viewer);
  std::string out;
  char buf[512];
  while (out.find("stt ready") == std::string::npos && fgets(buf, sizeof buf, viewer)) out += buf;
  ASSERT_NE(out.find("stt ready"), std::string::npos) << out;
  const std::string name = "Eve\x1b]0;pwned\x07\x1b[2J\x7f\xc2\x9b";
  auto eve = sw::net::ws_client::connect(h->ws(sw::test::harness::token("room", "eve", {}, name)));
  sw::test::expect_message(*eve, "ready");
  std::vector<std::uint8_t> frame(640, 1);
  eve->send_binary(frame.data(), frame.size());
  sw::test::expect_message(*eve, "transcript_final");
  eve.reset();
  h.reset();  // the server closes the viewer (1001): it ends
  while (fgets(buf, sizeof buf, viewer)) out += buf;
  const int status = pclose(viewer);
  EXPECT_EQ(WEXITSTATUS(status), 0) << out;
  EXPECT_NE(out.find("[Eve\xef\xbf\xbd]0;pwned\xef\xbf\xbd\xef\xbf\xbd[2J\xef\xbf\xbd\xef\xbf\xbd] chunk 1 640B"),
            std::string::npos)
      << out;
  for (char c : std::string("\x1b\x07\x7f"))
    EXPECT_EQ(out.find(c), std::string::npos) << static_cast<int>(c) << " in " << out;
  EXPECT_EQ(out.find("\xc2\x9b"), std::string::npos) << out;
}

}  // namespace
