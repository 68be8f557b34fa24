// The tag sessions-ws-loadgen writes over the first 20 bytes of every audio frame it sends, and the fake Gladia
// reads at every frame boundary of what the relay sends upstream (which may merge frames into larger chunks):
// relay latency and loss per frame, without trusting the server under test. Little-endian:
//   0-1 magic "LG", 2-3 frame length in bytes, 4-7 participant, 8-11 sequence, 12-19 send time (CLOCK_MONOTONIC, ns).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <optional>
#include <vector>

namespace sw {

struct load_tag {
  static constexpr std::size_t size = 20;
  std::uint16_t frame_bytes = 0;
  std::uint32_t participant = 0;
  std::uint32_t sequence = 0;
  std::int64_t sent_ns = 0;
};

inline std::int64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// A CLOCK_REALTIME instant (a kernel receive time, SO_TIMESTAMPNS) on CLOCK_MONOTONIC, by the two clocks' offset now.
inline std::int64_t monotonic_of_realtime_ns(std::int64_t realtime_ns) {
  timespec real{}, mono{};
  clock_gettime(CLOCK_REALTIME, &real);
  clock_gettime(CLOCK_MONOTONIC, &mono);
  const std::int64_t offset = (static_cast<std::int64_t>(real.tv_sec) - mono.tv_sec) * 1'000'000'000 +
                              (static_cast<std::int64_t>(real.tv_nsec) - mono.tv_nsec);
  return realtime_ns - offset;
}

inline void put_le(std::uint8_t* p, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
inline std::uint64_t get_le(const std::uint8_t* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}

inline void write_load_tag(std::uint8_t* out, const load_tag& t) {
  out[0] = 'L';
  out[1] = 'G';
  put_le(out + 2, t.frame_bytes, 2);
  put_le(out + 4, t.participant, 4);
  put_le(out + 8, t.sequence, 4);
  put_le(out + 12, static_cast<std::uint64_t>(t.sent_ns), 8);
}

// nullopt when the bytes are no tag (wrong magic, or a frame length that cannot hold one).
inline std::optional<load_tag> read_load_tag(const std::uint8_t* in) {
  if (in[0] != 'L' || in[1] != 'G') return std::nullopt;
  load_tag t;
  t.frame_bytes = static_cast<std::uint16_t>(get_le(in + 2, 2));
  if (t.frame_bytes < load_tag::size) return std::nullopt;
  t.participant = static_cast<std::uint32_t>(get_le(in + 4, 4));
  t.sequence = static_cast<std::uint32_t>(get_le(in + 8, 4));
  t.sent_ns = static_cast<std::int64_t>(get_le(in + 12, 8));
  return t;
}

// Finds the tags of one stream of frames as it arrives in chunks of any size (a relay may merge frames, or cut one
// across two chunks). A frame counts when its last byte has arrived. A stream that does not start with a tag, or
// loses one, stops being read (`broken`).
class load_tag_reader {
public:
  // `done(tag, last)` for every frame completed by this chunk, in order; `last` for the one completing the chunk's
  // data (the frame that made the relay send it).
  template <class Done>
  void feed(const std::uint8_t* data, std::size_t n, Done&& done) {
    completed_.clear();
    while (n > 0 && !broken_) {
      if (have_ < load_tag::size) {
        const std::size_t take = std::min(load_tag::size - have_, n);
        std::memcpy(buf_ + have_, data, take);
        have_ += take;
        data += take;
        n -= take;
        offset_ += take;
        if (have_ < load_tag::size) break;
        auto t = read_load_tag(buf_);
        if (!t) {
          broken_ = true;
          break;
        }
        current_ = *t;
      }
      const std::size_t take = std::min<std::size_t>(current_.frame_bytes - offset_, n);
      data += take;
      n -= take;
      offset_ += take;
      if (offset_ == current_.frame_bytes) {
        completed_.push_back(current_);
        have_ = 0;
        offset_ = 0;
      }
    }
    for (std::size_t i = 0; i < completed_.size(); ++i) done(completed_[i], i + 1 == completed_.size());
  }
  bool broken() const { return broken_; }

private:
  std::uint8_t buf_[load_tag::size] = {};
  std::size_t have_ = 0;    // tag bytes of the current frame collected
  std::size_t offset_ = 0;  // bytes of the current frame seen
  load_tag current_;
  bool broken_ = false;
  std::vector<load_tag> completed_;
};

}  // namespace sw
