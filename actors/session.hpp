// The session actor: one participant stream (one authenticated WebSocket: a browser's, or a LiveKit egress's).
// Validates and rate-limits audio, relays it to its STT relay, attributes transcripts to the participant and hands them
// to the room (and finals to persistence), answers control messages, and drains the upstream before it ends.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <boost/container/deque.hpp>

#include "actors/audio_guard.hpp"
#include "actors/context.hpp"
#include "actors/egress_audio.hpp"

namespace sw {

struct session_state {
  static inline const char* name = "session";
  context_ptr ctx;
  stream_identity who;
  bool legacy = false;
  room_actor room;
  gateway_actor gateway;  // told when the socket is gone while the upstream still drains
  client_sink_ptr sink;
  stt_relay_actor relay;
  std::string provider;
  std::string stt_state;  // last status sent: "", connecting, ready, stopped
  std::optional<audio_guard> guard;
  std::optional<text_guard> texts;
  // A LiveKit egress stream (who.track_id set): its 48 kHz stereo becomes 16 kHz mono here; it sends no JSON (the
  // egress reads nothing) and is no member of the room; `muted` frames pause it (nothing goes upstream meanwhile).
  std::unique_ptr<egress_audio> egress;
  bool muted = false;
  // The room's audio mix (a `room`-mode egress, track "room"): where the stream's audio sits on the wall clock, for
  // attributing each utterance to the active speaker. One anchor (stream ms, wall ms) per start or unmute, bounded.
  bool room_mix = false;
  boost::container::deque<std::pair<std::int64_t, std::int64_t>> anchors;
  std::uint64_t mono_bytes = 0;  // 16 kHz mono bytes accepted so far
  bool anchor_next = true;
  audio_chunk batch;  // accepted audio not yet handed to the relay (provider's batch_bytes)
  // Accepted since the last flush (including `batch`): not a multiple of batch_bytes means audio waits in a
  // partial chunk, here or in the relay, and goes after STT_CHUNK_FLUSH_MS without more.
  std::uint64_t since_flush = 0;
  bool relay_done = false;   // the relay reported "stopped" (or died)
  bool opened = false;       // socket accepted
  bool socket_gone = false;  // socket closed (or never opened)
  bool stop_requested = false;
  bool shutting_down = false;
  bool close_sent = false;
  bool peer_closed = false;  // the client closed the socket itself (its close frame first)
  bool fault = false;        // closed by this service for a fault (shed, flood): ends with stream_fault()
  std::string stt_failure;   // the code of the relay's failure for good (stt_error), if it failed
  bool shed = false;         // the gateway shed it (overload): closed 1013, once open
  bool finishing = false;
  std::int64_t started_ms = 0;
  std::int64_t last_rate_warning_ms = 0;
  std::int64_t last_invalid_warning_ms = 0;
  std::int64_t last_text_warning_ms = 0;
  usage_record usage;
  actor_probe probe;
};

session_actor::behavior_type session(session_actor::stateful_pointer<session_state> self, context_ptr ctx,
                                     stream_identity who, bool legacy, room_actor room, gateway_actor gateway);

}  // namespace sw
