// The executable as an operator runs it: starts on the configured port, serves, and exits 0 on SIGTERM
// after closing streams with 1001.
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#include <cstdio>

#include <gtest/gtest.h>

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
