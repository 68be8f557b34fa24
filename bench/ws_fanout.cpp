// ws_fanout: throughput of the session path and fan-out latency, over real loopback WebSockets against
// the in-process service (scripted echo relay: one partial + one final per audio frame).
//
//   ws_fanout [--streams S] [--frames F] [--listeners N] [--rounds R]
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/support/harness.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
using sw::net::ws_client;
using namespace std::chrono_literals;

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

bool is_final(const std::string& s) {
  return s.find("\"transcript_final\"") != std::string::npos;
}

// Frames/s through client -> session -> relay -> room -> client, S independent streams in parallel.
void throughput(sw::test::harness& h, int streams, int frames) {
  std::vector<std::unique_ptr<ws_client>> cs;
  for (int i = 0; i < streams; ++i) {
    cs.push_back(h.connect("tp-" + std::to_string(i), "s" + std::to_string(i)));
    cs.back()->read_until("ready", 5s);
  }
  const std::size_t bytes = 100;  // small frames: the per-frame path, not the byte volume, is measured
  std::atomic<long> done{0};
  auto cpu0 = cpu_seconds();
  auto t0 = clock_type::now();
  std::vector<std::thread> ts;
  for (int i = 0; i < streams; ++i)
    ts.emplace_back([&, i] {
      std::vector<std::uint8_t> f(bytes, 0);
      int sent = 0, got = 0;
      while (got < frames) {
        while (sent < frames && sent - got < 32) {  // keep 32 frames in flight per stream
          cs[i]->send_binary(f.data(), f.size());
          ++sent;
        }
        auto m = cs[i]->read(5s);
        if (m.kind != ws_client::message::text) {
          std::fprintf(stderr, "stream %d: unexpected end (%u)\n", i, m.close_code);
          return;
        }
        if (is_final(m.data)) ++got;
      }
      done += got;
    });
  for (auto& t : ts) t.join();
  double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  double cpu = cpu_seconds() - cpu0;
  std::printf(
      "session path: %d streams x %d frames (%zu B): %.0f frames/s end to end (%.2f s, %.2f CPU s incl. "
      "clients; %.1f us CPU per frame)\n",
      streams, frames, bytes, static_cast<double>(done.load()) / secs, secs, cpu,
      cpu / static_cast<double>(done.load()) * 1e6);
  for (auto& c : cs) c->close();
}

// One speaker, N listeners in one room: time from the speaker's frame to each listener's final.
void fanout(sw::test::harness& h, int listeners, int rounds) {
  auto speaker = h.connect("fan", "speaker");
  speaker->read_until("ready", 5s);
  std::vector<std::unique_ptr<ws_client>> ls;
  for (int i = 0; i < listeners; ++i) {
    ls.push_back(h.connect("fan", "l" + std::to_string(i)));
    ls.back()->read_until("ready", 5s);
  }
  std::vector<clock_type::time_point> sent(rounds + 1);
  std::mutex mu;
  std::vector<double> lat;
  lat.reserve(static_cast<std::size_t>(listeners * rounds));
  std::atomic<bool> ready{false};
  std::vector<std::thread> ts;
  for (int i = 0; i < listeners; ++i)
    ts.emplace_back([&, i] {
      int got = 0;
      std::vector<double> mine;
      while (got < rounds) {
        auto m = ls[i]->read(5s);
        if (m.kind != ws_client::message::text) break;
        if (!is_final(m.data)) continue;
        auto now = clock_type::now();
        auto pos = m.data.find("chunk ");
        int n = std::atoi(m.data.c_str() + pos + 6);
        while (!ready) std::this_thread::yield();
        mine.push_back(std::chrono::duration<double, std::milli>(now - sent[n]).count());
        ++got;
      }
      std::lock_guard<std::mutex> lock(mu);
      lat.insert(lat.end(), mine.begin(), mine.end());
    });
  std::vector<std::uint8_t> f(640, 0);  // 20 ms of audio
  auto next = clock_type::now();
  for (int r = 1; r <= rounds; ++r) {
    sent[r] = clock_type::now();
    ready = true;
    speaker->send_binary(f.data(), f.size());
    while (speaker->read(0ms).kind == ws_client::message::text) {
    }
    next += 20ms;  // real-time pace
    std::this_thread::sleep_until(next);
  }
  for (auto& t : ts) t.join();
  std::sort(lat.begin(), lat.end());
  auto q = [&](double p) { return lat.empty() ? 0.0 : lat[static_cast<std::size_t>(p * (lat.size() - 1))]; };
  std::printf(
      "fan-out: 1 speaker -> %d listeners, %d frames at 20 ms: %zu deliveries, latency p50 %.3f ms, "
      "p95 %.3f ms, p99 %.3f ms, max %.3f ms\n",
      listeners, rounds, lat.size(), q(0.5), q(0.95), q(0.99), lat.empty() ? 0.0 : lat.back());
  for (auto& c : ls) c->close();
  speaker->close();
}

}  // namespace

int main(int argc, char** argv) {
  int streams = 20, frames = 2000, listeners = 50, rounds = 250;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--streams"))
      streams = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--frames"))
      frames = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--listeners"))
      listeners = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--rounds"))
      rounds = std::atoi(argv[i + 1]);
  }
  sw::test::harness h([](sw::config& c) {
    c.max_streams_per_user = 100000;
    c.max_streams_per_room = 100000;
    c.max_streams = 100000;
    c.audio_max_frames_per_second = 1'000'000;  // frames as fast as the server takes them
    c.persistence = false;                      // measures delivery only
  });
  std::printf("sessions-ws ws_fanout (loopback, %u cores)\n", std::thread::hardware_concurrency());
  throughput(h, streams, frames);
  fanout(h, listeners, rounds);
  return 0;
}
