// A fake LiveKit server (shared/reference/external-apis-and-anchors.md §A2), strict about the API and able to fail:
// - Twirp (§A2.2): POST /twirp/livekit.<Service>/<Method> with Content-Type application/json and `Authorization:
//   Bearer <token>`, the token HS256 with the API secret, iss = the API key, and the grants §A2.1 asks for
//   (video.roomRecord for Egress; video.roomAdmin with video.room = the request's room for RoomService); answers in
//   LiveKit's shapes (snake_case, int64 as strings, enums as names) and Twirp error bodies.
//   RoomService/ListParticipants, Egress/StartTrackEgress, Egress/StartEgress, Egress/StopEgress, Egress/ListEgress.
// - Egress (§A2.4): each started egress dials its websocket_url with `Content-Type: audio/x-raw` and streams S16LE
//   48 kHz stereo in irregular frame sizes, paced, pings, sends {"muted":…} on mute changes, and ends with a close
//   frame without status (stopped, or its participant left). A stream the service closes (or that breaks) fails its
//   egress, as LiveKit's failed write does (or leaves it ACTIVE: keep_active_when_closed).
// - Webhooks (§A2.6): signed like LiveKit's (raw JWT, sha256 claim of the body), sent to `webhook_url`.
// HTTP on 127.0.0.1, a thread per connection and per egress (a test tool, not a load tool).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace sw::test {

class fake_livekit {
public:
  struct options {
    std::string api_key = "fake-livekit-key";
    std::string api_secret = "fake-livekit-secret-0123456789abcdef";
    std::uint16_t port = 0;           // 0: any free port
    std::string webhook_url;          // where webhooks go (empty: none are sent)
    double pace = 2.0;                // egress audio at this multiple of real time (the service takes up to 2x)
    bool silence_after_audio = true;  // a track keeps sending silence after its recording (until stopped); else it
                                      // ends (close without status) when the recording does
  };
  explicit fake_livekit(options o);
  fake_livekit() : fake_livekit(options{}) {}
  ~fake_livekit();
  fake_livekit(const fake_livekit&) = delete;
  fake_livekit& operator=(const fake_livekit&) = delete;

  std::string url() const;  // http://127.0.0.1:PORT, for LIVEKIT_URL
  std::uint16_t port() const;
  const options& opts() const;
  void set_webhook_url(const std::string& url);  // before any webhook goes (the service's port comes late)

  // --- the rooms ---
  // A participant joins `room` publishing one audio track `track_sid` whose egress streams `pcm48k_stereo` (S16LE,
  // 48 kHz, interleaved stereo). Sends track_published when `webhook` (and a webhook_url is set).
  void publish(const std::string& room, const std::string& identity, const std::string& name,
               const std::string& track_sid, std::string pcm48k_stereo, bool webhook = false);
  // An egress participant (kind EGRESS, with an audio track of its own) that must never be transcribed.
  void add_egress_participant(const std::string& room);
  // The participant leaves: its egresses end (close without status, EGRESS_COMPLETE); sends participant_left and
  // egress_ended when `webhook`.
  void leave(const std::string& room, const std::string& identity, bool webhook = true);
  // The audio of the room mix (StartEgress): one recording after another, as the room heard them.
  void set_room_audio(std::string pcm48k_stereo);
  // Mute or unmute a track: its egress sends {"muted":true|false} (and keeps streaming its audio: the service has to
  // drop it).
  void mute(const std::string& track_sid, bool muted);

  // --- faults (for the calls that come next) ---
  // The next `times` calls of `method` (e.g. "StartTrackEgress") answer `status` with Twirp error `code`.
  void fail(const std::string& method, int times, unsigned status, const std::string& code, const std::string& msg);
  // Calls of `method` are read and never answered while on (the caller's timeout has to end them).
  void stall(const std::string& method, bool on);
  // Calls of `method` are carried out at once (an egress starts) but answered only once this is off again: a slow
  // answer, or one still on its way.
  void hold_answers(const std::string& method, bool on);
  // The egress ends at LiveKit without a word: no webhook, its stream closes (a lost egress_ended).
  void end_egress_silently(const std::string& egress_id);
  // The egress's connection breaks: its socket is closed without a close frame (a crashed egress, a network cut).
  void break_egress_stream(const std::string& egress_id);
  // An egress whose stream the service closes (or that breaks) stays EGRESS_ACTIVE in ListEgress, until stopped
  // (livekit/egress#143). Off (the default): it becomes EGRESS_FAILED, as LiveKit's failed write makes it.
  void keep_active_when_closed(bool on);

  // --- webhooks ---
  // POSTs `body` to the webhook_url signed as LiveKit does; `wrong_secret` signs with another secret, `tamper`
  // changes the body after signing. Returns the HTTP status (0: no answer).
  unsigned send_webhook(const std::string& body, bool wrong_secret = false, bool tamper = false);
  static std::string webhook_body(const std::string& event, const std::string& room, const std::string& identity = {},
                                  const std::string& track_sid = {}, const std::string& egress_id = {});

  // --- observations ---
  struct egress_record {
    std::string egress_id, room, track_id, websocket_url;
    bool room_mix = false;
    std::string status;           // EGRESS_STARTING | EGRESS_ACTIVE | EGRESS_ENDING | EGRESS_COMPLETE | EGRESS_FAILED
    unsigned upgrade_status = 0;  // 101 when the service took the WebSocket
    bool content_type_sent = false;
    std::size_t bytes_sent = 0;
    std::size_t bytes_sent_muted = 0;  // of which after a {"muted":true} (and before its {"muted":false})
    std::size_t frames_sent = 0;
    std::size_t pings_sent = 0;
    bool closed = false;           // the stream is over (our close, or the service's)
    std::uint16_t close_code = 0;  // what the service answered (1005: no status echoed; 0: none)
  };
  std::vector<egress_record> egresses() const;
  std::size_t active_egresses(const std::string& room = {}) const;
  int calls(const std::string& method) const;  // answered or not
  std::vector<std::string> refusals() const;   // why calls were refused (auth, grants, content type), in order

  struct impl;

private:
  std::shared_ptr<impl> impl_;
};

}  // namespace sw::test
