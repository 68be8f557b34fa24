// The offline STT relay (embedded default): PocketSphinx with Debian's US-English model. Continuous
// recognition with partial hypotheses (at most every 300 ms while speech goes on) and a final per utterance
// (silence-based endpointing). Recognition is blocking CPU work: each stream's relay is a detached actor with a
// decoder leased from a bounded pool (LOCAL_STT_MAX_STREAMS); over the limit a stream gets `stt_busy`. The
// decoders form one group per core; a group loads the language model once and its decoders take turns on it.
#pragma once

#include <memory>
#include <string>

#include "actors/context.hpp"

namespace sw {

// Where the model lives (Debian's pocketsphinx-en-us); overridable for tests.
struct local_model_paths {
  std::string hmm = "/usr/share/pocketsphinx/model/en-us/en-us";
  std::string lm = "/usr/share/pocketsphinx/model/en-us/en-us.lm.bin";
  std::string dict = "/usr/share/pocketsphinx/model/en-us/cmudict-en-us.dict";
  bool available() const;
};

stt_provider local_provider(context_ptr ctx, local_model_paths paths = {});

}  // namespace sw
