#include "actors/audio_guard.hpp"

namespace sw {
// Header-only logic; this file keeps the one-file-pair-per-component layout and checks the header compiles alone.
static_assert(audio_guard::capacity == 5 * audio_guard::refill_per_second, "bucket = 5 s at 2x real time");
}  // namespace sw
