// relay_latency: what the Gladia relay adds between a client's audio frame and the upstream receiving it,
// and the server's CPU per stream. The real sessions-ws binary runs as its own process against the fake
// Gladia (tests/fakes); S clients stream 20 ms frames at real-time pace over loopback.
//
//   relay_latency [--streams S] [--seconds D]
// Latency of a chunk = fake receives the ~100 ms chunk - client sent the frame that completed it (the relay
// re-chunks 20 ms frames into 100 ms upstream frames, so earlier frames of a chunk wait by design).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include "tests/fakes/fake_gladia.hpp"
#include "tests/support/harness.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using namespace std::chrono_literals;

double process_cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto p = s.rfind(')');
  if (p == std::string::npos) return 0;
  std::istringstream in(s.substr(p + 2));
  std::string x;
  unsigned long long ut = 0, st = 0;
  for (int i = 3; i <= 15; ++i) {
    in >> x;
    if (i == 14) ut = std::stoull(x);
    if (i == 15) st = std::stoull(x);
  }
  return static_cast<double>(ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

long rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return 0;
}

int free_port() {
  sw::test::harness probe({}, std::nullopt);
  return probe.port;
}

std::string frame_audio(int stream, std::size_t bytes) {
  std::string a(bytes, '\0');
  std::memcpy(&a[0], &stream, sizeof stream);  // the first bytes name the stream (maps fake sessions back)
  return a;
}

void run(int streams, int seconds) {
  sw::test::fake_gladia fake;
  fake.record_arrivals(true);
  int port = free_port();
  pid_t pid = fork();
  if (pid == 0) {
    setenv("PORT", std::to_string(port).c_str(), 1);
    setenv("HOST", "127.0.0.1", 1);
    setenv("TRANSCRIPTION_JWT_SECRET", sw::test::secret.c_str(), 1);
    setenv("GLADIA_API_URL", fake.url().c_str(), 1);
    setenv("GLADIA_API_KEY", "fake-gladia-key", 1);
    setenv("MAX_STREAMS", "100000", 1);
    setenv("MAX_STREAMS_PER_ROOM", "100000", 1);
    setenv("LOG_LEVEL", "error", 1);
    setenv("DATABASE_URL", "none", 1);
    execl(SESSIONS_WS_BIN, SESSIONS_WS_BIN, static_cast<char*>(nullptr));
    _exit(127);
  }
  std::string base = "ws://127.0.0.1:" + std::to_string(port) + "/api/realtime/transcribe?token=";
  for (int i = 0; i < 200; ++i) {
    try {
      if (sw::net::http_fetch("http://127.0.0.1:" + std::to_string(port) + "/health").status == 200) break;
    } catch (...) {
      std::this_thread::sleep_for(25ms);
    }
  }
  std::vector<std::unique_ptr<sw::net::ws_client>> cs(streams);
  for (int i = 0; i < streams; ++i) {
    cs[i] = sw::net::ws_client::connect(
        base + sw::test::harness::token("bench-" + std::to_string(i), "p" + std::to_string(i)));
    cs[i]->read_until("ready", 30s);
  }
  const int frames = seconds * 50;
  // sent[stream][k] = when frame k (ending at offset 640*(k+1)) left the client
  std::vector<std::vector<clock_type::time_point>> sent(streams, std::vector<clock_type::time_point>(frames));
  const int threads = std::min(4, streams);
  auto cpu0 = process_cpu_seconds(pid);
  auto start = clock_type::now() + 50ms;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      std::vector<std::string> audio;
      for (int i = t; i < streams; i += threads) audio.push_back(frame_audio(i, 640));
      for (int k = 0; k < frames; ++k) {
        int j = 0;
        for (int i = t; i < streams; i += threads, ++j) {
          // Streams are spread evenly over the 20 ms frame period, as independent participants are; sending all
          // of them at the same instant would measure the queue of a synthetic burst instead of the relay.
          std::this_thread::sleep_until(start + k * 20ms + i * std::chrono::microseconds(20'000) / streams);
          sent[i][k] = clock_type::now();
          cs[i]->send_binary(audio[j].data(), audio[j].size());
          while (cs[i]->read(0ms).kind == sw::net::ws_client::message::text) {
          }
        }
      }
    });
  for (auto& t : ts) t.join();
  auto wall = std::chrono::duration<double>(clock_type::now() - start).count();
  auto cpu = process_cpu_seconds(pid) - cpu0;
  auto rss = rss_kib(pid);
  std::this_thread::sleep_for(300ms);
  // map fake sessions to streams by their first bytes
  std::map<std::string, int> owner;
  for (auto& id : fake.session_ids()) {
    auto a = fake.audio(id);
    if (a.size() >= sizeof(int)) {
      int i;
      std::memcpy(&i, a.data(), sizeof i);
      owner[id] = i;
    }
  }
  std::vector<double> lat;
  for (auto& a : fake.arrivals()) {
    auto it = owner.find(a.session);
    if (it == owner.end() || a.end % 640 != 0) continue;
    int k = static_cast<int>(a.end / 640) - 1;
    if (k < 0 || k >= frames) continue;
    lat.push_back(std::chrono::duration<double, std::milli>(a.at - sent[it->second][k]).count());
  }
  std::sort(lat.begin(), lat.end());
  auto q = [&](double p) { return lat.empty() ? 0.0 : lat[static_cast<std::size_t>(p * (lat.size() - 1))]; };
  std::printf(
      "relay: %d streams x %d s of 20 ms frames: %zu chunks, added latency p50 %.3f ms, p99 %.3f ms, max %.3f "
      "ms; server CPU %.3f s over %.1f s = %.2f ms CPU per stream-second; server RSS %ld MiB\n",
      streams, seconds, lat.size(), q(0.5), q(0.99), lat.empty() ? 0 : lat.back(), cpu, wall,
      cpu / wall / streams * 1000.0, rss / 1024);
  for (auto& c : cs) c->close();
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> streams{100, 300, 1000};
  int seconds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--streams")) streams = {std::atoi(argv[i + 1])};
    if (!std::strcmp(argv[i], "--seconds")) seconds = std::atoi(argv[i + 1]);
  }
  signal(SIGPIPE, SIG_IGN);
  for (int s : streams) run(s, seconds);
  return 0;
}
