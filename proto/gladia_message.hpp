// The Gladia live v2 messages the relay reads (shared/reference/external-apis-and-anchors.md §A1.4), decoded from
// one WebSocket text frame. Private to the Gladia relay; fuzzed on its own (tests/fuzz).
#pragma once

#include <string>
#include <string_view>

#include "proto/messages.hpp"

namespace sw {

struct gladia_message {
  enum class kind {
    unparsable,  // not a JSON object with a string "type"
    transcript,  // a partial or final: `transcript`
    ack,         // audio_chunk acknowledgment: `ack_start` (byte_range[0], -1 if absent) and `ack_end`
    post_final,  // post_final_transcript: the end after stop_recording
    known,       // a type the relay needs nothing from (speech events, lifecycle, post_transcript, ...)
    unknown,     // any other type (ignored, counted)
  };
  kind what = kind::unparsable;
  std::string type;
  stt_transcript transcript;
  double ack_start = -1;
  double ack_end = -1;
};

// `text` is read up to its terminating NUL, RapidJSON's fastest input (the relay's messages arrive as strings).
gladia_message parse_gladia_message(const std::string& text);
// Any bytes, read by their length. Both read the same text alike (a NUL byte ends it for either).
gladia_message parse_gladia_message(std::string_view text);

}  // namespace sw
