// A latency histogram for load figures: log-linear buckets (16 per power of two, so any percentile is within ~4.5 %
// of the true value) from 1 µs to ~1.2 h, fixed memory, mergeable. Not thread-safe: each thread keeps its own and
// they are merged, or a lock guards one.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

namespace sw {

class histogram {
public:
  static constexpr int sub = 16;      // buckets per power of two
  static constexpr int octaves = 32;  // 1 µs .. 2^32 µs
  void add_us(double us) {
    ++count_;
    sum_ += us;
    if (us > max_) max_ = us;
    ++buckets_[index(us)];
  }
  void add_ns(std::int64_t ns) { add_us(static_cast<double>(ns) / 1000.0); }
  void merge(const histogram& o) {
    count_ += o.count_;
    sum_ += o.sum_;
    if (o.max_ > max_) max_ = o.max_;
    for (std::size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += o.buckets_[i];
  }
  std::uint64_t count() const { return count_; }
  double mean_us() const { return count_ ? sum_ / static_cast<double>(count_) : 0; }
  double max_us() const { return max_; }
  // The value below which a fraction q of the samples lie (the upper edge of that bucket, capped at the maximum).
  double quantile_us(double q) const {
    if (!count_) return 0;
    auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
    if (rank == 0) rank = 1;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < buckets_.size(); ++i) {
      seen += buckets_[i];
      if (seen >= rank) return std::min(upper(i), max_);
    }
    return max_;
  }

private:
  static std::size_t index(double us) {
    if (!(us >= 1)) return 0;  // below 1 µs (and NaN) in the first bucket
    int e = 0;
    const double m = std::frexp(us, &e);  // us = m * 2^e, m in [0.5, 1)
    const int octave = e - 1;
    if (octave >= octaves) return sub * octaves;
    const int step = static_cast<int>((m * 2 - 1) * sub);  // 0 .. sub-1
    return static_cast<std::size_t>(1 + octave * sub + step);
  }
  static double upper(std::size_t i) {
    if (i == 0) return 1;
    const auto k = static_cast<int>(i - 1);
    return std::ldexp(1.0 + static_cast<double>(k % sub + 1) / sub, k / sub);
  }
  std::array<std::uint64_t, sub * octaves + 1> buckets_{};
  std::uint64_t count_ = 0;
  double sum_ = 0, max_ = 0;
};

}  // namespace sw
