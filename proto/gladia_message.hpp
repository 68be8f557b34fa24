// The Gladia live v2 messages the relay reads (shared/reference/external-apis-and-anchors.md §A1.4), decoded from
// one WebSocket text frame. Private to the Gladia relay; fuzzed on its own (tests/fuzz).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "proto/messages.hpp"

namespace sw {

struct gladia_message {
  enum class kind {
    unparsable,       // not a JSON object with a string "type"
    transcript,       // a partial or final: `transcript`
    ack,              // audio_chunk acknowledgment: `ack_start` (byte_range[0], -1 if absent) and `ack_end`
    post_final,       // post_final_transcript: the end after stop_recording
    post_transcript,  // post_transcript: the session's every utterance (`utterances`), before post_final_transcript
    stop_ack,         // stop_recording's acknowledgment: `acknowledged` (false: refused, e.g. already stopped)
    known,            // a type the relay needs nothing from (speech events, lifecycle, ...)
    unknown,          // any other type (ignored, counted)
  };
  kind what = kind::unparsable;
  std::string type;
  stt_transcript transcript;
  double ack_start = -1;
  double ack_end = -1;
  bool acknowledged = false;
  std::vector<stt_transcript> utterances;  // post_transcript's, as finals without ids
};

// GET /v2/live/{id}'s answer (§A1.2): the session's status ("queued" | "processing" | "done" | "error"; empty when
// the body is not such an answer) and, once done, its every utterance as finals without ids.
struct gladia_result {
  std::string status;
  std::vector<stt_transcript> utterances;
};
gladia_result parse_gladia_result(std::string_view body);

// `text` is read up to its terminating NUL, RapidJSON's fastest input (the relay's messages arrive as strings).
gladia_message parse_gladia_message(const std::string& text);
// Any bytes, read by their length. Both read the same text alike (a NUL byte ends it for either).
gladia_message parse_gladia_message(std::string_view text);

}  // namespace sw
