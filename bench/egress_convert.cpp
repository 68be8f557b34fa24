// The cost of LiveKit egress audio on the server: 48 kHz stereo S16LE (as Track Egress sends it) down-mixed and
// resampled to 16 kHz mono by the session's egress_audio (libsoxr HQ), in the frame sizes GStreamer hands over.
// Reports CPU per 20 ms of audio, per second of audio, and the share of one core 1 000 such streams would take.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <vector>

#include "actors/egress_audio.hpp"

namespace {

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

int main() {
  constexpr double seconds = 120;
  const std::size_t frames = static_cast<std::size_t>(seconds * 48'000);
  std::vector<std::uint8_t> pcm(frames * 4);
  for (std::size_t i = 0; i < frames; ++i) {  // speech-like: two tones and a little noise
    const double t = static_cast<double>(i) / 48'000;
    const auto l =
        static_cast<std::int16_t>(6'000 * std::sin(2 * M_PI * 220 * t) + 2'000 * std::sin(2 * M_PI * 1'800 * t) +
                                  static_cast<double>(static_cast<int>(i * 2'654'435'761u % 512) - 256));
    const auto r = static_cast<std::int16_t>(l / 2);
    for (auto s : {l, r}) {
      pcm[4 * i + (s == l ? 0 : 2)] = static_cast<std::uint8_t>(static_cast<std::uint16_t>(s) & 0xff);
      pcm[4 * i + (s == l ? 1 : 3)] = static_cast<std::uint8_t>(static_cast<std::uint16_t>(s) >> 8);
    }
  }
  for (std::size_t frame : {3'840u, 1'924u, 19'200u}) {  // 20 ms, an uneven ~10 ms, 100 ms
    double best = 1e9;
    std::size_t out = 0;
    for (int run = 0; run < 3; ++run) {
      sw::egress_audio conv;
      out = 0;
      const double t0 = thread_cpu_s();
      for (std::size_t at = 0; at < pcm.size(); at += frame)
        out += conv.convert(pcm.data() + at, std::min(frame, pcm.size() - at)).size();
      out += conv.drain().size();
      best = std::min(best, thread_cpu_s() - t0);
    }
    const double per_20ms_us = best / (seconds / 0.02) * 1e6;
    std::printf(
        "egress_convert frame=%zu B: %.2f us CPU per 20 ms of audio, %.3f ms per audio second, "
        "1000 streams = %.1f %% of a core (out %zu B of 16 kHz mono for %.0f s)\n",
        frame, per_20ms_us, best / seconds * 1e3, best / seconds * 1000 * 100, out, seconds);
  }
  return 0;
}
