// The egress actor: LiveKit transcription of one room. It asks LiveKit (Twirp, net/livekit_client) to push the room's
// audio to /egress/audio, one Track Egress per published audio track (`track` mode) or one egress of the room's audio
// mix (`room` mode); each such stream is a session actor like a browser's, which the gateway attaches here. Webhooks
// and a reconciliation timer keep the egresses in line with the room; a stop ends them and waits for the streams to
// deliver their last finals. Failures of LiveKit reach the room's clients as `transcription_error`.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include <caf/typed_response_promise.hpp>

#include "actors/context.hpp"

namespace sw {

struct egress_state {
  static inline const char* name = "egress";
  context_ptr ctx;
  gateway_actor gateway;
  std::string slug, session_id;
  bool room_mode = false;
  bool started = false;   // a start arrived
  bool stopping = false;  // a stop (or room_finished) arrived: ends once the streams are gone
  bool forced = false;    // the streams were told to drain from this side
  struct track {
    std::string identity, name;
    std::string egress_id;               // empty while its start call is in flight (or after it failed)
    bool starting = false;               // StartTrackEgress / StartEgress in flight
    bool gone = false;                   // the track went while starting: stopped and forgotten once it answers
    bool stop_sent = false;              // StopEgress sent
    std::vector<session_actor> streams;  // attached /egress/audio sessions (normally one)
  };
  std::map<std::string, track> tracks;  // by track sid ("room" for the room mix)
  // Streams whose track is gone from `tracks` but which still drain.
  std::vector<session_actor> orphan_streams;
  std::uint64_t next_call = 1;
  std::unordered_map<std::uint64_t, std::function<void(const livekit_answer&)>> pending;
  bool listing = false;     // a ListParticipants of a start/webhook is in flight
  bool list_again = false;  // and another one is wanted after it
  bool reconciling = false;
  std::vector<caf::typed_response_promise<bool>> stop_waiters;
  std::uint64_t failures = 0;
  std::string last_error;
  actor_probe probe;
};

egress_actor::behavior_type egress(egress_actor::stateful_pointer<egress_state> self, context_ptr ctx,
                                   gateway_actor gateway, std::string slug);

// The room-mode "track": its stream is the room's audio mix, attributed by active speaker.
inline constexpr const char* room_mix_track = "room";

}  // namespace sw
