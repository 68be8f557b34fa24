// The room actor: one per sessionSlug. Membership, fan-out of transcripts to every client of the room,
// final dedup by utteranceId, and the room's active speaker.
#pragma once

#include <string>
#include <unordered_set>
#include <vector>

#include <boost/container/deque.hpp>

#include "actors/context.hpp"
#include "actors/speaker_timeline.hpp"

namespace sw {

struct room_state {
  static inline const char* name = "room";
  context_ptr ctx;
  std::string slug;
  std::vector<room_member> members;
  std::unordered_set<std::string> finals_seen;  // bounded by finals_order
  boost::container::deque<std::string> finals_order;
  speaker_timeline speakers;
  actor_probe probe;
};

// Finals remembered for dedup per room.
constexpr std::size_t room_dedup_window = 10'000;

room_actor::behavior_type room(room_actor::stateful_pointer<room_state> self, context_ptr ctx, std::string slug);

}  // namespace sw
