// Every typed actor interface of sessions-ws. One line per handler says what it does; reading this
// file top to bottom shows the whole message flow:
//
//   net (Asio threads) --http/upgrade--> gateway --spawns--> session (one per participant stream)
//   net --open/audio/text/closed/behind--> session --audio/stop--> STT relay --heard/status/error--> session
//   session --join/leave/transcript--> room (one per sessionSlug) --JSON--> every client_sink of the room
//   session --final/usage--> persistence (SOCI, detached)
//   gateway --queue--> persistence (figures for /health, /ready, /metrics)
//   session --behind--> gateway --shed--> the newest sessions (the server cannot read its audio as fast as it comes)
//   gateway --start/stop/webhook--> egress (one per LiveKit room being transcribed) --Twirp--> LiveKit,
//     which dials /egress/audio: a session per track, attached to its egress actor; failures --notice--> room
//   memory trim (detached) --tick--> itself: the heap's free pages back to the system
// Where they run: every actor that is not detached runs on the I/O threads (service/io_scheduler), so a client's
// frame, its session's decision and the upstream write happen on one thread; the detached ones (persistence's
// database, the offline recognizer, the memory trim) block on threads of their own (persistence's two and the memory
// trim's SCHED_BATCH: a message to them never preempts the I/O thread that sends it).
// Counters and actor statistics go to a thread-safe registry (telemetry/metrics.hpp), not through messages:
// /metrics reads it without adding load to the actors it observes.
#pragma once

#include <functional>

#include <caf/actor_system.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "proto/messages.hpp"

namespace sw {

// What an STT relay tells its session (the relay only ever sees this face of the session).
using stt_listener_actor = caf::typed_actor<
    // a partial or final transcript from the upstream, ids not yet namespaced
    caf::reacts_to<heard_atom, stt_transcript>,
    // the upstream's state changed (connecting -> ready -> stopped; connecting again while reconnecting)
    caf::reacts_to<status_atom, stt_status>,
    // the upstream failed for good; a status "stopped" follows
    caf::reacts_to<error_atom, stt_error>>;

// An STT relay (Gladia or local), one per participant stream; it monitors its session.
using stt_relay_actor = caf::typed_actor<
    // PCM16 audio in order (flush: the audio paused, send what waits); buffered while the upstream connects,
    // never dropped silently
    caf::reacts_to<audio_atom, audio_chunk>,
    // end of audio: deliver every remaining final, report "stopped", then exit
    caf::reacts_to<stop_atom>>;

// The Gladia relay: the STT relay interface plus what its own upstream connection reports.
using gladia_relay_actor = stt_relay_actor::extend<
    // the session-init POST finished (or failed on the network)
    caf::reacts_to<init_atom, upstream_init>,
    // an event of the upstream WebSocket (open / text / drained / closed), tagged with its connection generation
    caf::reacts_to<upstream_atom, upstream_event>,
    // the ack watchdog of a connection generation: nothing acknowledged for STT_ACK_TIMEOUT_MS -> drop it at once
    // (its generation ends: what it still reports is ignored), reconnect
    caf::reacts_to<tick_atom, std::uint64_t>,
    // the end probe of a connection generation, a second after the client's audio paused (or stopped): audio
    // outstanding and nothing acknowledged for a second, or Gladia's end awaited a second after stop_recording, and
    // no audio since -> ask the connection whether Gladia ended it unseen (a TCP end with its last message wakes no
    // read); it then reports closed
    caf::reacts_to<quiet_atom, std::uint64_t>,
    // a backoff timer fired: retry the init POST (init) or reconnect (connect) for that generation
    caf::reacts_to<connect_atom, std::uint64_t>, caf::reacts_to<retry_atom>,
    // the drain bound of a session (from its first stop_recording) ran out: the missing finals are fetched (below),
    // then "stopped"; ignored once the stream went on in a new session (the number is the session's), which has its
    // own; while reconnecting with audio Gladia has not acknowledged (nor the stop), once a session: the reconnects go
    // on, and the bound starts again with the stop on the next connection; the second time the stream ends there,
    // audio Gladia never acknowledged counted (gladia.unacknowledged_end_bytes)
    caf::reacts_to<timeout_atom, int>,
    // GET /v2/live/{id} of a session answered (the current one after stop, or one Gladia ended mid-stream, whose
    // stream goes on in a new session): its utterances whose finals were lost with a connection (or never came at
    // its end) are delivered, then "stopped" once none is left to fetch; not ready yet -> asked again (the timer
    // below) within STT_DRAIN_TIMEOUT_MS
    caf::reacts_to<result_atom, std::string, upstream_init>, caf::reacts_to<result_atom, std::string>>;

// The actor of one participant stream (spawned by the gateway actor per accepted token).
using session_actor = stt_listener_actor::extend<
    // the WebSocket is open; everything for this client goes through the sink
    caf::reacts_to<open_atom, client_sink_ptr>,
    // one binary frame from the client: validated, rate-limited, relayed
    caf::reacts_to<audio_atom, audio_chunk>,
    // the client's audio paused for STT_CHUNK_FLUSH_MS (net/ times it): hand what waits (maybe nothing) to the relay,
    // flush set: it sends what waits in its partial chunk, and knows the client paused
    caf::reacts_to<quiet_atom>,
    // one text frame from the client: JSON control message (ping, stop, active_speaker)
    caf::reacts_to<text_atom, std::string>,
    // the socket is gone (peer close, error, heartbeat timeout, handshake failure); true: the peer closed it (its
    // close frame came before any of ours). A stream that ended otherwise, and not by a stop or a shutdown of ours
    // (the service closed it for a fault, or it broke), ends its actor with stream_fault(): see below
    caf::reacts_to<closed_atom, bool>,
    // net/ found OVERLOAD_BACKLOG_MS of a browser's audio or more waiting unread in the kernel (bytes) at five checks
    // in a row, a second apart, and again at each further one: the server reads slower than the client sends; the
    // gateway hears it (in ms of this stream's audio)
    caf::reacts_to<behind_atom, std::uint64_t>,
    // the gateway sheds this stream to bring an overloaded server back: closed 1013 at once (after what is queued for
    // it), nothing more read from it goes upstream; the upstream drains and its finals are stored
    caf::reacts_to<shed_atom>,
    // the server is shutting down: drain the upstream, then close 1001
    caf::reacts_to<shutdown_atom>,
    // an egress stream whose room's transcription stopped, which LiveKit has not ended: as a client's stop (drain the
    // upstream, then close 1000)
    caf::reacts_to<stop_atom>>;

// The exit reason of a session whose stream ended for a fault: this service closed it (shed 1013, flood 1008, a slow
// reader 4409, the heartbeat 4408, a protocol error; an egress stream whose speech-to-text failed for good, 1013) or
// its connection broke without a close frame. Its monitors learn it from the down message: the egress actor replaces
// an egress whose stream ended so (LiveKit may keep it ACTIVE without a stream: livekit/egress#143). Every other end
// is normal.
inline caf::error stream_fault() {
  return caf::error(1, caf::atom("sw_stream"));
}
inline bool is_stream_fault(const caf::error& e) {
  return e && e.category() == caf::atom("sw_stream") && e.code() == 1;  // CAF 0.17: none has no category to read
}

// The active speaker of one room (played by the room actor): a bounded timeline of who said they spoke when.
using active_speaker_actor = caf::typed_actor<
    // a participant says it is speaking (HTTP route or `active_speaker` message): a change on the timeline
    caf::reacts_to<speaker_atom, active_speaker_update>,
    // who spoke last (identity empty when nobody has)
    caf::replies_to<speaker_atom>::with<active_speaker_update>,
    // who spoke most during this wall-clock span (identity "room" when nobody was reported): attributes the room
    // mix of a `room`-mode egress
    caf::replies_to<speaker_atom, speech_span>::with<active_speaker_update>>;

// One room (per sessionSlug): membership and fan-out. Spawned and stopped by the gateway actor.
using room_actor = active_speaker_actor::extend<
    // a client connection joins: it gets every transcript of the room from now on
    caf::reacts_to<join_atom, room_member>,
    // a client connection leaves (by stream id)
    caf::reacts_to<leave_atom, std::uint64_t>,
    // a transcript of one participant stream: deduplicated (finals) and sent to every member
    caf::reacts_to<transcript_atom, room_transcript>,
    // a ready-made JSON notice for every member (e.g. transcription_error)
    caf::reacts_to<notice_atom, std::string>,
    // barrier: answers once every earlier message from the caller has been handed to the clients
    caf::replies_to<sync_atom>::with<bool>>;

// Durable storage of finals and usage: owns the journal, and reaches the database only through a
// database_actor of its own, so no database call ever delays journaling.
using persistence_actor = caf::typed_actor<
    // a final transcript: journaled, then batched into the database
    caf::reacts_to<final_atom, final_record>,
    // a participant stream ended: one usage row
    caf::reacts_to<usage_atom, usage_record>,
    // queue figures and database health for /health, /ready and /metrics
    caf::replies_to<queue_atom>::with<queue_stats>,
    // a page of the stored finals of a room, for GET /api/sessions/{slug}/transcript (at most 16 reads wait for the
    // database; more are answered with an error at once)
    caf::replies_to<history_atom, transcript_query>::with<transcript_result>,
    // timer: fsync the journal, flush a batch, retry after a failure
    caf::reacts_to<tick_atom>,
    // timer: a database check or the shutdown bound took too long; answer with what is known
    caf::reacts_to<timeout_atom>,
    // shutdown: flush what it can within the bound; answers whether everything reached the database
    caf::replies_to<shutdown_atom>::with<bool>>;

// The database side of persistence: the only actor that blocks on storage/ (opening, migrating, writing), so
// the persistence actor keeps journaling while a batch, a reconnect or a dead server takes its time.
using database_actor = caf::typed_actor<
    // write a batch of finals (one transaction) and then usage rows; answers what got written
    caf::replies_to<write_atom, db_batch>::with<db_outcome>,
    // a page of the stored finals of a room
    caf::replies_to<history_atom, transcript_query>::with<transcript_result>,
    // is the database reachable (opens and migrates it when it is not open yet)
    caf::replies_to<ping_atom>::with<db_outcome>>;

// Decides upgrades (implemented by net/: accept moves the socket into a WebSocket for `session`).
class upgrade_responder {
public:
  virtual ~upgrade_responder() = default;
  virtual void accept(session_actor session) = 0;
  virtual void reject(http_response res) = 0;
};
using upgrade_responder_ptr = std::shared_ptr<upgrade_responder>;

// LiveKit transcription of one room (LIVEKIT_EGRESS_MODE track: an egress per published audio track; room: one of
// the room's audio mix). Spawned by the gateway on the first start; ends after a stop (or room_finished) has drained.
using egress_actor = caf::typed_actor<
    // POST /api/transcription/start: list the participants and start every missing egress (a start while running
    // changes nothing)
    caf::reacts_to<start_atom, egress_start>,
    // POST /api/transcription/stop: StopEgress every egress and drain their streams; answers once every stream has
    // delivered its last final (false: the drain bound ran out)
    caf::replies_to<stop_atom>::with<bool>,
    // a verified webhook about this room: track_published / track_unpublished / participant_left / egress_ended /
    // room_finished (a track that goes while its egress starts is stopped when the start answers)
    caf::reacts_to<webhook_atom, livekit_webhook>,
    // LiveKit dialled /egress/audio for this track: the session of that stream (monitored; the last stream of a
    // track that ends with stream_fault(), while its egress runs unasked to stop: the egress is stopped and forgotten,
    // and the next reconciliation starts a new one if the track is still published); while stopping (a stream of the
    // room that dialled in after the stop, until the stop is answered): stopped at once, as LiveKit would not
    caf::reacts_to<attach_atom, std::string, session_actor>,
    // a Twirp call of this actor answered (from an I/O thread)
    caf::reacts_to<reply_atom, livekit_answer>,
    // timer: reconcile with ListEgress and ListParticipants (webhooks can be lost)
    caf::reacts_to<tick_atom>,
    // timer: LiveKit did not close the stopped streams in time: drain them from this side
    caf::reacts_to<timeout_atom>>;

// The gateway actor: every HTTP request and upgrade request that net/ parsed.
using gateway_actor = caf::typed_actor<
    // a plain HTTP request; answered through the responder
    caf::reacts_to<http_atom, http_request, http_responder_ptr>,
    // a WebSocket upgrade request: token, room and admission checked before any 101
    caf::reacts_to<upgrade_atom, http_request, upgrade_responder_ptr>,
    // from a session: its socket is gone and it only drains its upstream; it no longer counts against its user
    caf::reacts_to<leave_atom>,
    // from a session: the server falls behind reading its audio (ms of it unread): the newest tenth of the streams is
    // shed (at least one), then none for 5 s while the rest catch up; upgrades get 503 until 5 s after the last such
    // report
    caf::reacts_to<behind_atom, std::uint32_t>,
    // from an egress actor: a JSON notice (transcription_error) for every client of that room, if it has any
    caf::reacts_to<notice_atom, std::string, std::string>,
    // stop admitting, close every stream with 1001 after draining
    caf::reacts_to<shutdown_atom>>;

// The supervisor: monitors the actors the service cannot run without (gateway, persistence). One that ends
// while the service runs is fatal: /health turns 503 and the service asks its owner to stop (the executable
// exits 1, for its supervisor to restart it; the journal replays what was not written).
using supervisor_actor = caf::typed_actor<
    // the service is stopping: the ends that follow are expected
    caf::reacts_to<shutdown_atom>>;

// Returns the heap's free pages to the system now and then (glibc's malloc_trim): after a burst (a thousand
// participants joining within a second: their handshakes, tokens and upstream connections, all short-lived) the
// process would otherwise keep the burst's memory for good. Detached: a trim holds the allocator's locks while it
// walks the heap.
using memory_trim_actor = caf::typed_actor<
    // trim now (counted in memory.trims, what it gave back in memory.trimmed_kib; the heap's figures after it in
    // memory.heap_in_use_bytes and memory.heap_free_bytes), and again after the interval
    caf::reacts_to<tick_atom>>;

// Writes out, a second after a burst, how many error and warning lines the log's throttle left out (metrics: at most
// one line a second per kind), so that an outage's count does not wait for the next outage.
using log_flush_actor = caf::typed_actor<
    // the counts left out, a line per kind whose last line is a second old (metrics::flush_suppressed); again in a
    // second
    caf::reacts_to<tick_atom>>;

// How a session gets its STT relay: a provider spawns one relay per participant stream. `spawn` returns
// an invalid handle when the provider cannot take the stream (the session then reports the error).
struct stt_provider {
  std::string name;  // reported in stt_status.provider and /ready ("gladia", "local", ...)
  // The session hands audio over whenever its running total crosses a multiple of this many bytes (and on
  // stop): a relay that sends fixed-size upstream chunks gets one message per chunk instead of one per frame.
  // 0: every frame, as it comes.
  std::size_t batch_bytes = 0;
  std::function<stt_relay_actor(caf::actor_system&, const stream_identity&, stt_listener_actor)> spawn;
};

}  // namespace sw

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(sw::upgrade_responder_ptr)
