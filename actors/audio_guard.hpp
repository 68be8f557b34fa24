// Validation and rate limiting of what a participant stream's client sends: audio frames and text messages.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "net/token_bucket.hpp"

namespace sw {

enum class frame_verdict : std::uint8_t {
  accept,
  invalid,          // odd size, empty, or over 65 536 bytes
  rate_limited,     // faster than 2x real time beyond the bucket
  too_many_frames,  // more frames a second than allowed, beyond the bucket (whatever their size)
  flood,            // 4 s of the frame rate dropped for their number within a second: the connection is closed
};

// Counts what was dropped within a second of the first drop; says when it reached a limit. The second opens at a
// drop, not at the connect: a flood that began late in a second is not cut in two.
class drop_window {
public:
  using clock = token_bucket::clock;

  bool reached(int limit, clock::time_point now) {
    if (drops_ == 0 || now - start_ >= std::chrono::seconds(1)) {
      start_ = now;
      drops_ = 0;
    }
    return ++drops_ >= limit;
  }

private:
  clock::time_point start_{};
  int drops_ = 0;
};

// PCM16 mono 16 kHz: 32 000 B/s real time. The bucket holds 5 s at 2x and refills at 2x real time.
//
// Frames are counted too, since each costs the server the same whatever its size: by default 250 a second (4 ms
// frames; the browser and LiveKit send 50, 20 ms each), 4 s of that at once. Within the byte limit alone, a client
// sending 2-byte frames could make the server handle 32 000 a second. One that has 4 s of the rate dropped for their
// number within a second is closed.
class audio_guard {
public:
  using clock = token_bucket::clock;
  static constexpr std::size_t min_frame = 2;
  static constexpr std::size_t max_frame = 65'536;
  static constexpr double capacity = 320'000;  // bytes
  static constexpr double refill_per_second = 64'000;
  static constexpr std::uint32_t default_frames_per_second = 250;

  explicit audio_guard(clock::time_point now, std::uint32_t frames_per_second = default_frames_per_second)
      : bucket_(capacity, refill_per_second, now),
        frames_(4.0 * frames_per_second, frames_per_second, now),
        flood_drops_(static_cast<int>(4 * frames_per_second)) {}

  // Every frame counts for its number, an invalid one too (it costs the server as much); an invalid one costs no
  // bytes.
  frame_verdict check(std::size_t bytes, clock::time_point now) {
    if (!frames_.take(1, now))
      return drops_.reached(flood_drops_, now) ? frame_verdict::flood : frame_verdict::too_many_frames;
    if (bytes < min_frame || bytes > max_frame || bytes % 2 != 0) return frame_verdict::invalid;
    return bucket_.take(static_cast<double>(bytes), now) ? frame_verdict::accept : frame_verdict::rate_limited;
  }

  double tokens() const { return bucket_.tokens(); }

private:
  token_bucket bucket_;  // bytes, full at connect
  token_bucket frames_;  // frames, full at connect
  drop_window drops_;    // frames dropped for their number
  int flood_drops_;      // within a second
};

enum class text_verdict : std::uint8_t {
  accept,
  dropped,  // beyond the bucket
  flood,    // still sending at ten times the rate: the connection is closed
};

// Text messages (`stop`, `ping`, `active_speaker`; the browser sends a handful per stream): 20 a second, 40 at once.
// Beyond that each is dropped; a client that has 200 dropped within a second is closed.
class text_guard {
public:
  using clock = token_bucket::clock;
  static constexpr double capacity = 40;
  static constexpr double refill_per_second = 20;
  static constexpr int flood_drops = 200;  // within a second

  explicit text_guard(clock::time_point now) : bucket_(capacity, refill_per_second, now) {}

  text_verdict check(clock::time_point now) {
    if (bucket_.take(1, now)) return text_verdict::accept;
    return drops_.reached(flood_drops, now) ? text_verdict::flood : text_verdict::dropped;
  }

private:
  token_bucket bucket_;
  drop_window drops_;
};

}  // namespace sw
