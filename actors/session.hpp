// The session actor: one participant stream (one authenticated WebSocket). Validates and rate-limits
// audio, relays it to its STT relay, attributes transcripts to the participant and hands them to the room
// (and finals to persistence), answers control messages, and drains the upstream before it ends.
#pragma once

#include <optional>
#include <string>

#include "actors/audio_guard.hpp"
#include "actors/context.hpp"

namespace sw {

struct session_state {
  static inline const char* name = "session";
  context_ptr ctx;
  stream_identity who;
  bool legacy = false;
  room_actor room;
  client_sink_ptr sink;
  stt_relay_actor relay;
  std::string provider;
  std::string stt_state;  // last status sent: "", connecting, ready, stopped
  std::optional<audio_guard> guard;
  audio_chunk batch;              // accepted audio not yet handed to the relay (provider's batch_bytes)
  std::uint64_t audio_bytes = 0;  // accepted so far, including `batch`
  bool relay_done = false;        // the relay reported "stopped" (or died)
  bool opened = false;            // socket accepted
  bool socket_gone = false;       // socket closed (or never opened)
  bool stop_requested = false;
  bool shutting_down = false;
  bool close_sent = false;
  bool finishing = false;
  std::int64_t started_ms = 0;
  std::int64_t last_rate_warning_ms = 0;
  std::int64_t last_invalid_warning_ms = 0;
  usage_record usage;
  actor_probe probe;
};

session_actor::behavior_type session(session_actor::stateful_pointer<session_state> self, context_ptr ctx,
                                     stream_identity who, bool legacy, room_actor room);

}  // namespace sw
