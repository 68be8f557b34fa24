// Audio files as sessions-ws-stream reads them (a WAV from anywhere): decoding never crashes, never allocates past
// its bound, and gives 16 kHz PCM16 or a clear error.
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "apps/audio_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    auto pcm = sw::decode_audio(data, size);
    if (pcm.size() > sw::max_audio_samples * 16) __builtin_trap();
  } catch (const std::runtime_error&) {
  }
  return 0;
}
