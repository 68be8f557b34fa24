// Every message value that crosses an actor boundary. Read proto/actors.hpp for who sends what to whom.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/meta/type_name.hpp>

#include "proto/client_sink.hpp"
#include "proto/http.hpp"
#include "proto/livekit.hpp"

namespace sw {

// --- atoms (at most 10 characters) ------------------------------------------------------------
using audio_atom = caf::atom_constant<caf::atom("audio")>;
using text_atom = caf::atom_constant<caf::atom("text")>;
using open_atom = caf::atom_constant<caf::atom("open")>;
using closed_atom = caf::atom_constant<caf::atom("closed")>;
using stop_atom = caf::atom_constant<caf::atom("stop")>;
using status_atom = caf::atom_constant<caf::atom("status")>;
using heard_atom = caf::atom_constant<caf::atom("heard")>;           // a transcript from the STT upstream
using transcript_atom = caf::atom_constant<caf::atom("transcrpt")>;  // a transcript for the room's clients
using history_atom = caf::atom_constant<caf::atom("history")>;       // the stored transcript of a room
using error_atom = caf::atom_constant<caf::atom("error")>;
using join_atom = caf::atom_constant<caf::atom("join")>;
using leave_atom = caf::atom_constant<caf::atom("leave")>;
using speaker_atom = caf::atom_constant<caf::atom("speaker")>;
using notice_atom = caf::atom_constant<caf::atom("notice")>;
using http_atom = caf::atom_constant<caf::atom("http")>;
using upgrade_atom = caf::atom_constant<caf::atom("upgrade")>;
using shutdown_atom = caf::atom_constant<caf::atom("shutdown")>;
using final_atom = caf::atom_constant<caf::atom("final")>;
using usage_atom = caf::atom_constant<caf::atom("usage")>;
using queue_atom = caf::atom_constant<caf::atom("queue")>;
using tick_atom = caf::atom_constant<caf::atom("tick")>;
using sync_atom = caf::atom_constant<caf::atom("sync")>;
using init_atom = caf::atom_constant<caf::atom("init")>;
using retry_atom = caf::atom_constant<caf::atom("retry")>;
using connect_atom = caf::atom_constant<caf::atom("connect")>;
using upstream_atom = caf::atom_constant<caf::atom("upstream")>;
using timeout_atom = caf::atom_constant<caf::atom("timeout")>;
using write_atom = caf::atom_constant<caf::atom("write")>;
using ping_atom = caf::atom_constant<caf::atom("ping")>;
using quiet_atom = caf::atom_constant<caf::atom("quiet")>;
using start_atom = caf::atom_constant<caf::atom("start")>;
using webhook_atom = caf::atom_constant<caf::atom("webhook")>;
using attach_atom = caf::atom_constant<caf::atom("attach")>;
using reply_atom = caf::atom_constant<caf::atom("reply")>;
using behind_atom = caf::atom_constant<caf::atom("behind")>;
using shed_atom = caf::atom_constant<caf::atom("shed")>;
using result_atom = caf::atom_constant<caf::atom("result")>;  // an upstream's result of a whole session

// --- participant stream -----------------------------------------------------------------------

// Who a participant stream is, from its verified token.
struct stream_identity {
  std::uint64_t stream_id = 0;  // unique per participant stream in this process
  std::string stream_key;       // random, unique per stream across restarts: namespaces utterance ids
  std::string session_slug;     // the room
  std::string session_id;       // web app's VideoSession id (may be empty)
  std::string identity;         // LiveKit identity
  std::string user_id;          // `sub`, else the identity
  std::string name;             // display name: `name` claim, else the identity
  std::string track_id;         // LiveKit egress streams: the track (audio 48 kHz stereo); empty for browsers
};

// PCM16 LE 16 kHz mono audio: one binary frame of a client, or (net/ to a session) the client's frames of about
// one upstream chunk, back to back, so that a session hears from its socket once per chunk and not per frame.
struct audio_chunk {
  std::vector<std::uint8_t> pcm;
  bool flush = false;  // the audio paused: send what waits in a partial upstream chunk now (it may be short)
  // The sizes of the client's frames that make up `pcm`, in order (each one is validated and rate-limited on its
  // own); empty: `pcm` is a single frame.
  std::vector<std::uint32_t> frames;
  // When the server read the newest bytes of `pcm` (steady clock, ns; 0: not stamped): the relay times each
  // upstream chunk's wait inside the server from it (gladia.relay_ms in /metrics).
  std::int64_t read_ns = 0;
};

// --- STT relay <-> session --------------------------------------------------------------------

// A transcript as the upstream reports it (ids are the upstream's, not yet namespaced).
struct stt_transcript {
  std::string utterance_id;
  std::string text;
  bool is_final = false;
  std::string language;
  double start = 0;  // seconds from the stream's start
  double end = 0;
};

// Upstream state: "connecting" | "ready" | "stopped".
struct stt_status {
  std::string status;
  std::string provider;
};

// Terminal upstream failure; code is one of the client protocol's error codes.
struct stt_error {
  std::string code;  // stt_unavailable | stt_auth_failed | stt_busy | internal
  std::string message;
};

// --- STT relay <-> its upstream connection (net/ callbacks, delivered as messages) ---------------

// The outcome of the session-init request (POST /v2/live).
struct upstream_init {
  bool ok = false;    // a response arrived
  std::string error;  // network failure otherwise
  unsigned status = 0;
  std::string body;
  std::string retry_after;  // Retry-After header, if any
};

// One event of upstream WebSocket number `generation`: "open", "text" (with data) or "closed".
struct upstream_event {
  std::uint64_t generation = 0;
  std::string kind;
  std::string data;
  std::uint16_t code = 0;
};

// --- session -> room --------------------------------------------------------------------------

// A client connection in a room; legacy = `format=legacy` framing.
struct room_member {
  std::uint64_t stream_id = 0;
  client_sink_ptr sink;
  bool legacy = false;
};

// A transcript attributed to its speaker, ready for fan-out and storage.
struct room_transcript {
  std::string session_slug;
  std::string utterance_id;  // namespaced per participant stream: unique within the room
  std::string text;
  bool is_final = false;
  std::string speaker_id;    // identity, or "room"
  std::string speaker_name;  // display name
  std::string language;
  double start = 0;
  double end = 0;
};

// Who is speaking in a room (HTTP route or the `active_speaker` client message).
struct active_speaker_update {
  std::string identity;
  std::string name;
  std::int64_t timestamp_ms = 0;
};

// The span of an utterance on the wall clock (ms since epoch), for attribution by active speaker.
struct speech_span {
  std::int64_t from_ms = 0;
  std::int64_t to_ms = 0;
};

// --- room transcription (LiveKit egress) --------------------------------------------------------

// POST /api/transcription/start: the web app's VideoSession id and the room (the LiveKit room's name).
struct egress_start {
  std::string session_id;
  std::string session_slug;
};

// A LiveKit Twirp call answered (or failed), for the egress actor that made it (call id).
struct livekit_answer {
  std::uint64_t call = 0;
  bool ok = false;
  unsigned status = 0;
  std::string body;
  std::string error;
};

// --- session -> persistence (implemented by the persistence actor) ---------------------------

// A final transcript to store.
struct final_record {
  room_transcript transcript;
  std::string session_id;
  std::int64_t stream_started_ms = 0;  // wall clock of the stream's first audio
};

// Usage of one ended participant stream.
struct usage_record {
  std::string session_slug;
  std::string session_id;
  std::string identity;
  std::int64_t started_ms = 0;
  std::int64_t ended_ms = 0;
  std::uint64_t audio_chunks = 0;
  std::uint64_t transcripts = 0;
  std::uint64_t finals = 0;
  std::uint64_t partials = 0;
  std::uint64_t errors = 0;
};

// One stored final, as GET /api/sessions/{slug}/transcript returns it (times ISO 8601).
struct transcript_segment {
  std::string utterance_id, speaker_id, speaker_name, text, language, started_at, ended_at;
};

// A page of a room's stored transcript: its finals from `offset` on (in the order of start), at most `limit` of them.
// A page is bounded so that a room with a very long history (a slug reused for months) costs a request no more than
// transcript_page_max segments of memory and database time.
constexpr std::uint32_t transcript_page_max = 20'000;
struct transcript_query {
  std::string slug;
  std::uint64_t offset = 0;
  std::uint32_t limit = transcript_page_max;
};

// The stored transcript of a room: found=false for an unknown room, error set when the database failed; more: the
// room has finals after this page.
struct transcript_result {
  bool found = false;
  bool more = false;
  std::string error;
  std::vector<transcript_segment> segments;
};

// Persistence queue figures for /health and /metrics.
struct queue_stats {
  std::uint64_t queue_length = 0;  // finals accepted but not yet committed
  std::uint64_t total_queued = 0;
  std::uint64_t total_flushed = 0;
  std::uint64_t total_errors = 0;
  std::int64_t last_flush_ms = 0;  // 0 = never
  std::string last_error;
  bool database_ok = false;
  std::string backend;              // "sqlite" | "postgresql" | "" (none)
  std::uint64_t usage_pending = 0;  // usage rows not yet written
  std::uint64_t parked = 0;         // rows (finals and usage) waiting for their room or refused; retried every 5 s
  bool bounded_out = false;         // a bound is reached: finals wait only in the journal, or parked rows are given up
};

// One write for the database actor: a batch of finals (one transaction), then usage rows in order.
struct db_batch {
  std::vector<final_record> finals;
  std::vector<usage_record> usage;
};

// What the database actor did with a db_batch (or a ping).
// What happened to one row of a db_batch.
enum class row_fate : std::uint8_t {
  written,
  unknown_room,  // a web-app database does not know its room (it cannot be created without a Space): parked
  refused,       // the database refused this row on its own (the server answers): parked, retried, never blocking
};

struct db_outcome {
  bool ok = false;                   // everything handled (ping: the database answers)
  bool finals_written = false;       // every final was handled: committed, or parked as `unknown` / `refused`
  std::vector<std::size_t> unknown;  // indices of finals whose room a web-app database does not know (not written)
  std::vector<std::size_t> refused;  // indices of finals the database refused on their own (not written)
  std::vector<row_fate> usage;       // the usage rows handled, from the front
  std::string error;
  std::string backend;  // "sqlite" | "postgresql" once the database was opened
  double batch_ms = 0;  // time the finals' transaction took
};

// --- inspectors -------------------------------------------------------------------------------
#define SW_INSPECT(type, ...)                                      \
  template <class Inspector>                                       \
  typename Inspector::result_type inspect(Inspector& f, type& x) { \
    return f(caf::meta::type_name(#type), __VA_ARGS__);            \
  }
SW_INSPECT(stream_identity, x.stream_id, x.stream_key, x.session_slug, x.session_id, x.identity, x.user_id, x.name,
           x.track_id)
SW_INSPECT(audio_chunk, x.pcm, x.flush, x.frames, x.read_ns)
SW_INSPECT(stt_transcript, x.utterance_id, x.text, x.is_final, x.language, x.start, x.end)
SW_INSPECT(stt_status, x.status, x.provider)
SW_INSPECT(stt_error, x.code, x.message)
SW_INSPECT(upstream_init, x.ok, x.error, x.status, x.body, x.retry_after)
SW_INSPECT(upstream_event, x.generation, x.kind, x.data, x.code)
SW_INSPECT(room_transcript, x.session_slug, x.utterance_id, x.text, x.is_final, x.speaker_id, x.speaker_name,
           x.language, x.start, x.end)
SW_INSPECT(active_speaker_update, x.identity, x.name, x.timestamp_ms)
SW_INSPECT(speech_span, x.from_ms, x.to_ms)
SW_INSPECT(egress_start, x.session_id, x.session_slug)
SW_INSPECT(livekit_answer, x.call, x.ok, x.status, x.body, x.error)
SW_INSPECT(final_record, x.transcript, x.session_id, x.stream_started_ms)
SW_INSPECT(usage_record, x.session_slug, x.session_id, x.identity, x.started_ms, x.ended_ms, x.audio_chunks,
           x.transcripts, x.finals, x.partials, x.errors)
SW_INSPECT(transcript_segment, x.utterance_id, x.speaker_id, x.speaker_name, x.text, x.language, x.started_at,
           x.ended_at)
SW_INSPECT(transcript_query, x.slug, x.offset, x.limit)
SW_INSPECT(transcript_result, x.found, x.more, x.error, x.segments)
SW_INSPECT(db_batch, x.finals, x.usage)
SW_INSPECT(db_outcome, x.ok, x.finals_written, x.unknown, x.refused, x.usage, x.error, x.backend, x.batch_ms)
SW_INSPECT(queue_stats, x.queue_length, x.total_queued, x.total_flushed, x.total_errors, x.last_flush_ms, x.last_error,
           x.database_ok, x.backend, x.usage_pending, x.parked, x.bounded_out)
#undef SW_INSPECT

}  // namespace sw

// Process-local handles (never serialized): a connection's write side and responders.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(sw::room_member)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(sw::client_sink_ptr)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(sw::http_responder_ptr)
// A verified LiveKit webhook (proto/livekit.hpp), handed from the gateway to a room's egress actor in-process.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(sw::livekit_webhook)
