// A scripted STT relay for tests (the real providers are issues #3 and #5). For every audio chunk it
// reports a partial and a final transcript of that chunk, so tests can see exactly what went through.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>

#include "proto/actors.hpp"

namespace sw::test {

// Every byte of audio the relays of one provider received, in order (a test reads it once the streams ended).
struct audio_capture {
  std::mutex mu;
  std::string pcm;
  std::string take() {
    std::lock_guard<std::mutex> lock(mu);
    return pcm;
  }
};

struct echo_options {
  std::size_t padding = 0;                   // bytes appended to every final's text (slow-client tests)
  bool partials = true;                      // also emit a partial per chunk
  bool duplicate_finals = false;             // emit every final twice (dedup tests)
  std::string fail_code;                     // non-empty: report this error at start and stop
  std::chrono::milliseconds drain{0};        // after stop, "stopped" comes this much later (an upstream's last finals)
  bool drain_without_audio = true;           // false: a relay that got no audio stops at once (nothing to drain)
  std::chrono::milliseconds final_delay{0};  // each final comes this much after its audio (keep drain above it)
  std::shared_ptr<audio_capture> capture;    // set: the audio is kept there
};

// Utterance ids are "u<n>" for the n-th chunk; texts are "chunk <n> <bytes>B".
stt_provider echo_provider(echo_options opts = {});

}  // namespace sw::test
