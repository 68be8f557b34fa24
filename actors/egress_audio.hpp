// Private to the session actor: the audio of a LiveKit Track Egress (raw S16LE, 48 kHz, 2 channels interleaved, in
// frames of any size, even cut inside a sample) as the STT relays take it: PCM16 LE, 16 kHz, mono. Down-mixed by
// averaging the channels, resampled by libsoxr (high quality), streaming: what the resampler holds back comes out
// with the next frames, and all of it with drain().
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

struct soxr;  // libsoxr's resampler

namespace sw {

class egress_audio {
public:
  static constexpr unsigned in_rate = 48'000, in_channels = 2, out_rate = 16'000;

  egress_audio();
  ~egress_audio();
  egress_audio(const egress_audio&) = delete;
  egress_audio& operator=(const egress_audio&) = delete;

  // The 16 kHz mono PCM16 that `bytes` of egress audio yield now (may be empty: the resampler's delay).
  std::vector<std::uint8_t> convert(const std::uint8_t* data, std::size_t bytes);
  // The end of the stream: what the resampler still holds (once; nothing after it).
  std::vector<std::uint8_t> drain();
  bool ok() const { return soxr_ != nullptr; }

private:
  std::vector<std::uint8_t> run(const float* in, std::size_t frames);

  ::soxr* soxr_ = nullptr;
  std::uint8_t carry_[4] = {};  // a stereo sample cut by a frame boundary
  std::size_t carried_ = 0;
  bool ended_ = false;  // drained: the stream is over
  std::vector<float> mono_, out_;
};

}  // namespace sw
