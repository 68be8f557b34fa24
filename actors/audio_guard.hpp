// Validation and rate limiting of a participant stream's audio frames.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace sw {

enum class frame_verdict : std::uint8_t {
  accept,
  invalid,       // odd size, empty, or over 65 536 bytes
  rate_limited,  // faster than 2x real time beyond the bucket
};

// PCM16 mono 16 kHz: 32 000 B/s real time. The bucket holds 5 s at 2x and refills at 2x real time.
class audio_guard {
public:
  using clock = std::chrono::steady_clock;
  static constexpr std::size_t min_frame = 2;
  static constexpr std::size_t max_frame = 65'536;
  static constexpr double capacity = 320'000;  // bytes
  static constexpr double refill_per_second = 64'000;

  explicit audio_guard(clock::time_point now) : last_(now) {}

  frame_verdict check(std::size_t bytes, clock::time_point now) {
    if (bytes < min_frame || bytes > max_frame || bytes % 2 != 0) return frame_verdict::invalid;
    refill(now);
    if (static_cast<double>(bytes) > tokens_) return frame_verdict::rate_limited;
    tokens_ -= static_cast<double>(bytes);
    return frame_verdict::accept;
  }

  double tokens() const { return tokens_; }

private:
  void refill(clock::time_point now) {
    if (now <= last_) return;
    std::chrono::duration<double> dt = now - last_;
    last_ = now;
    tokens_ += dt.count() * refill_per_second;
    if (tokens_ > capacity) tokens_ = capacity;
  }

  double tokens_ = capacity;  // full at connect
  clock::time_point last_;
};

}  // namespace sw
