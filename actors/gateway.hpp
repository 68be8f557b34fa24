// The gateway actor: decides every HTTP request and WebSocket upgrade that net/ parsed. Verifies tokens
// and admission limits before any upgrade, spawns a session actor per accepted participant stream,
// keeps the room registry (one room actor per sessionSlug, stopped when its last stream ends).
#pragma once

#include <random>
#include <string>
#include <unordered_map>

#include "actors/context.hpp"

namespace sw {

struct gateway_state {
  static inline const char* name = "gateway";
  context_ptr ctx;
  struct room_entry {
    room_actor actor;
    std::uint32_t streams = 0;
  };
  struct stream_entry {
    session_actor actor;
    std::string slug;
    std::string user;
    std::uint64_t id = 0;   // stream_identity::stream_id: the newest streams are shed first
    bool draining = false;  // socket gone, upstream draining: no longer counted in per_user
    bool shed = false;      // closed 1013 for an overload
  };
  std::unordered_map<std::string, room_entry> rooms;
  std::unordered_map<std::string, std::uint32_t> per_user;
  std::unordered_map<caf::actor_addr, stream_entry> streams;
  // LiveKit room transcription: the egress actor of each room being transcribed, and the web app's session ids
  std::unordered_map<std::string, egress_actor> egress_rooms;    // by sessionSlug
  std::unordered_map<std::string, std::string> egress_sessions;  // sessionId -> sessionSlug
  // A stopped run's egress actor until its stop is answered: an egress stream of that room that dials in meanwhile
  // (LiveKit started it just before the stop and did not end it) is attached to it, which stops it.
  std::unordered_map<std::string, egress_actor> stopping_egress_rooms;  // by sessionSlug
  std::uint64_t next_stream_id = 1;
  std::mt19937_64 rng{std::random_device{}()};
  bool shutting_down = false;
  // Overload (behind_atom): upgrades get 503 until overloaded_until; no stream is shed before next_shed (steady ms)
  std::int64_t overloaded_until = 0, next_shed = 0;
  std::int64_t started_ms = 0;
  actor_probe probe;
};

gateway_actor::behavior_type gateway(gateway_actor::stateful_pointer<gateway_state> self, context_ptr ctx);

// HTTP routing (actors/http_routes.cpp): answers one plain HTTP request.
void handle_http(gateway_actor::stateful_pointer<gateway_state> self, const http_request& req,
                 const http_responder_ptr& responder);

}  // namespace sw
