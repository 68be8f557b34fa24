// The executable as an operator runs it: starts on the configured port, serves, and exits 0 on SIGTERM
// after closing streams with 1001.
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#include <cstdio>

#include <gtest/gtest.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include <filesystem>
#include <vector>

#include "tests/support/harness.hpp"

namespace {

using namespace std::chrono_literals;

int free_port() {
  // Let the kernel pick: bind a harness on port 0, read it, release it.
  sw::test::harness probe({}, std::nullopt);
  return probe.port;
}

TEST(Process, ServesAndExitsZeroOnSigterm) {
  int port = free_port();
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    setenv("PORT", std::to_string(port).c_str(), 1);
    setenv("HOST", "127.0.0.1", 1);
    setenv("TRANSCRIPTION_JWT_SECRET", sw::test::secret.c_str(), 1);
    setenv("LOG_LEVEL", "error", 1);
    setenv("DATABASE_URL", "none", 1);
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
