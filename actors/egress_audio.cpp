#include "actors/egress_audio.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <soxr.h>

namespace sw {

egress_audio::egress_audio() {
  soxr_error_t error = nullptr;
  auto io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  auto quality = soxr_quality_spec(SOXR_HQ, 0);
  soxr_ = soxr_create(in_rate, out_rate, 1, &error, &io, &quality, nullptr);
  if (error) soxr_ = nullptr;
}

egress_audio::~egress_audio() {
  if (soxr_) soxr_delete(soxr_);
}

std::vector<std::uint8_t> egress_audio::convert(const std::uint8_t* data, std::size_t bytes) {
  if (ended_) return {};
  mono_.clear();
  auto sample = [](const std::uint8_t* p) {
    return static_cast<std::int16_t>(static_cast<std::uint16_t>(p[0] | (p[1] << 8)));
  };
  auto push = [&](const std::uint8_t* frame) {
    mono_.push_back((static_cast<float>(sample(frame)) + static_cast<float>(sample(frame + 2))) / 65536.0f);
  };
  std::size_t i = 0;
  while (carried_ > 0 && carried_ < 4 && i < bytes) {
    carry_[carried_++] = data[i++];
    if (carried_ == 4) {
      push(carry_);
      carried_ = 0;
    }
  }
  for (; i + 4 <= bytes; i += 4) push(data + i);
  for (; i < bytes; ++i) carry_[carried_++] = data[i];
  if (mono_.empty()) return {};  // (a null input would tell soxr the stream ended)
  return run(mono_.data(), mono_.size());
}

std::vector<std::uint8_t> egress_audio::drain() {
  if (ended_) return {};
  ended_ = true;
  carried_ = 0;
  return run(nullptr, 0);
}

std::vector<std::uint8_t> egress_audio::run(const float* in, std::size_t frames) {
  std::vector<std::uint8_t> pcm;
  if (!soxr_) return pcm;
  // in == nullptr: the end of input; soxr then gives out what it holds, over as many calls as it takes
  const std::size_t room = frames / 3 + 1024;
  out_.resize(room);
  for (;;) {
    std::size_t used = 0, made = 0;
    if (soxr_process(soxr_, in, frames, &used, out_.data(), room, &made)) break;
    for (std::size_t k = 0; k < made; ++k) {
      const float v = std::clamp(out_[k] * 32768.0f, -32768.0f, 32767.0f);
      const auto s = static_cast<std::int16_t>(std::lrint(v));
      pcm.push_back(static_cast<std::uint8_t>(static_cast<std::uint16_t>(s) & 0xff));
      pcm.push_back(static_cast<std::uint8_t>(static_cast<std::uint16_t>(s) >> 8));
    }
    if (in) {
      in += used;
      frames -= used;
      if (frames == 0 && made < room) break;
    } else if (made == 0) {
      break;
    }
  }
  return pcm;
}

}  // namespace sw
