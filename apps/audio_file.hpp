// Audio files for the command-line tools: any format libsndfile reads, as PCM16 mono at 16 kHz (downmixed,
// resampled with libsoxr). Files are input from anywhere: every header value is bounded before it is used.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sw {

// At most this many samples (all channels) are decoded: 10 minutes of 48 kHz stereo.
constexpr std::size_t max_audio_samples = 10ull * 60 * 48'000 * 2;

// Throws std::runtime_error with what is wrong (unreadable, unsupported, out of bounds).
std::vector<std::int16_t> decode_audio(const void* data, std::size_t size);
std::vector<std::int16_t> load_audio(const std::string& path);

}  // namespace sw
