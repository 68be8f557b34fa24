// LiveKit's server APIs as they cross the wire (../shared/reference/external-apis-and-anchors.md §A2): the access
// token a backend signs for its Twirp calls, and lenient readers of the Twirp JSON answers. LiveKit writes snake_case
// keys, int64 as strings and enums as names; other servers and SDK versions write camelCase, numbers, enum numbers:
// every reader takes all of them. A reader answers nothing for what is not the expected shape.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sw {

// The `video` grant of a token: `room_record` for every Egress RPC; `room_admin` with `room` for RoomService calls.
struct livekit_grant {
  bool room_record = false;
  bool room_admin = false;
  std::string room;
};

// HS256 with the API secret: iss = API key, nbf = iat = now, exp = now + ttl, `video` = the grant.
std::string livekit_access_token(const std::string& api_key, const std::string& api_secret, const livekit_grant& grant,
                                 std::int64_t now_s, std::int64_t ttl_s = 600);

struct livekit_track {
  std::string sid;
  std::string name;
  bool audio = false;  // type AUDIO
  bool muted = false;
};

struct livekit_participant {
  std::string sid, identity, name;
  bool egress = false;  // kind EGRESS: an egress of the room, never transcribed
  std::vector<livekit_track> tracks;
};

// RoomService/ListParticipants: {participants:[ParticipantInfo]}.
std::optional<std::vector<livekit_participant>> parse_livekit_participants(std::string_view json);

struct livekit_egress {
  std::string egress_id, room_name;
  std::string track_id;       // of a Track Egress (its request), else empty
  std::string websocket_url;  // where its audio goes: a Track Egress's websocket_url, or its first stream URL
  std::string status;         // EGRESS_STARTING | EGRESS_ACTIVE | EGRESS_ENDING | EGRESS_COMPLETE | EGRESS_FAILED | ...
  std::string error;
  bool active() const { return status == "EGRESS_STARTING" || status == "EGRESS_ACTIVE"; }
};

// An EgressInfo (the answer of StartTrackEgress, StartEgress, StopEgress).
std::optional<livekit_egress> parse_livekit_egress(std::string_view json);
// EgressService/ListEgress: {items:[EgressInfo], next_page_token}.
std::optional<std::vector<livekit_egress>> parse_livekit_egress_list(std::string_view json);

// --- request bodies (proto field names, which every LiveKit server accepts) ---
std::string livekit_list_participants_body(const std::string& room);
// A Track Egress of one track to a WebSocket (raw PCM S16LE 48 kHz stereo dialled to `websocket_url`).
std::string livekit_track_egress_body(const std::string& room, const std::string& track_id,
                                      const std::string& websocket_url);
// The unified StartEgress of the room's audio mix (every audio track, both channels) to a WebSocket stream output.
std::string livekit_room_audio_egress_body(const std::string& room, const std::string& websocket_url);
std::string livekit_stop_egress_body(const std::string& egress_id);
std::string livekit_list_egress_body(const std::string& room, bool active_only);

// --- webhooks (§A2.6) ---
// Checks a webhook's Authorization header (the raw JWT, no "Bearer "): HS256 with the API secret, iss = the API key,
// not expired, claim sha256 = base64 of SHA-256 of the raw body (compared in constant time). Empty when it holds,
// else why not. Nothing of the body is parsed before this says yes.
std::string verify_livekit_webhook(const std::string& authorization, std::string_view body, const std::string& api_key,
                                   const std::string& api_secret);
// The Authorization header LiveKit sends with `body` (the fake LiveKit, tests).
std::string livekit_webhook_token(const std::string& api_key, const std::string& api_secret, std::string_view body,
                                  std::int64_t now_s, std::int64_t ttl_s = 300);

struct livekit_webhook {
  std::string event;  // track_published, track_unpublished, participant_left, egress_ended, room_finished, ...
  std::string id;
  std::string room;  // room.name (or egressInfo.roomName)
  std::string participant_identity, participant_name;
  bool participant_egress = false;
  std::string track_sid;
  bool track_audio = false;
  std::optional<livekit_egress> egress;  // egressInfo
};
// WebhookEvent (protojson defaults: lowerCamelCase; proto names accepted too).
std::optional<livekit_webhook> parse_livekit_webhook(std::string_view json);

// What a failed Twirp call says, for logs and transcription_error: "LiveKit <code>: <msg> (HTTP <status>)", or the
// status alone when the body is no Twirp error.
std::string livekit_error_message(unsigned http_status, std::string_view body);

}  // namespace sw
