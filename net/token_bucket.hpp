// A token bucket: holds up to `capacity`, refills at `per_second`, full at the start. What a client may send: the
// WebSocket frame budget here in net/ (client_layer.hpp), the audio and text limits of a stream (actors/audio_guard).
#pragma once

#include <chrono>

namespace sw {

class token_bucket {
public:
  using clock = std::chrono::steady_clock;
  token_bucket(double capacity, double per_second, clock::time_point now)
      : capacity_(capacity), per_second_(per_second), tokens_(capacity), last_(now) {}

  // Takes `n` if that many are there; otherwise takes nothing.
  bool take(double n, clock::time_point now) {
    refill(now);
    if (n > tokens_) return false;
    tokens_ -= n;
    return true;
  }

  // Takes `n` whatever there is: the bucket may go into debt, which the refill pays back before anything else.
  void spend(double n, clock::time_point now) {
    refill(now);
    tokens_ -= n;
  }

  double tokens() const { return tokens_; }

  // How long the refill takes to pay back the debt (zero without one).
  clock::duration debt_wait() const {
    if (tokens_ >= 0) return clock::duration::zero();
    return std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(-tokens_ / per_second_));
  }

private:
  void refill(clock::time_point now) {
    if (now <= last_) return;
    std::chrono::duration<double> dt = now - last_;
    last_ = now;
    tokens_ += dt.count() * per_second_;
    if (tokens_ > capacity_) tokens_ = capacity_;
  }

  double capacity_, per_second_, tokens_;
  clock::time_point last_;
};

}  // namespace sw
