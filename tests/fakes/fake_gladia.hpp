// A fake Gladia live v2 server (shared/reference/external-apis-and-anchors.md §A1, checklist A1.7), strict
// about the API and able to inject faults. HTTP(S) + WebSocket on 127.0.0.1 (named localhost in its URLs),
// asynchronous on a thread or two of its own (no thread per connection: it carries thousands of streams on one core).
// Used by the tests, by sessions-ws-loadgen's --embedded-upstream and by the program sessions-ws-fake-gladia. For
// load it reads the loadgen's frame tags (proto/load_tag.hpp) and stamps its transcripts with their emit time.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "telemetry/histogram.hpp"

namespace sw::test {

class fake_gladia {
public:
  struct options {
    std::string api_key = "fake-gladia-key";
    std::size_t final_every_chunks = 10;  // a final per 10 chunks of 100 ms; partial per chunk
    // Session n's finals come n chunks earlier (mod final_every_chunks), as independent speakers' utterances
    // end at different moments; otherwise every session started together gets its finals in the same instant.
    bool stagger_finals = false;
    std::string tls_cert_file;  // both set: HTTPS + WSS (the URLs then name localhost)
    std::string tls_key_file;
    // --- for load ---
    std::uint16_t port = 0;                      // 0: any free port
    std::string host = "127.0.0.1";              // where it listens
    int threads = 1;                             // I/O threads
    std::chrono::milliseconds partial_every{0};  // 0: a partial per chunk; else one per this much audio
    std::chrono::milliseconds final_every{0};    // 0: final_every_chunks; else a final per this much audio
    bool keep_audio = true;                      // false: audio is counted, not kept (thousands of streams for minutes)
    bool stamp_texts = false;  // each transcript's text ends with " @<CLOCK_MONOTONIC ns>" of its sending
    bool read_tags = false;    // read the loadgen's frame tags: relay latency and loss (load())
    // >0: every session ends when its audio would pass this much, as with end_session_after (with its results):
    // Gladia's 3-hour limit of a live session, shortened
    std::chrono::milliseconds session_limit{0};
    // >0: every session is lost when its audio would pass this much, as with lose_session_after (a Gladia host that
    // went away: no reconnect to the session's url gets through)
    std::chrono::milliseconds lose_after{0};
  };
  // The options for load (the loadgen's embedded upstream, sessions-ws-fake-gladia): a partial every 300 ms and a
  // final every 2 s of audio per stream, staggered; audio counted, not kept; texts stamped; tags read.
  static options load_options();
  explicit fake_gladia(options o);
  fake_gladia() : fake_gladia(options{}) {}
  ~fake_gladia();

  std::string url() const;  // base URL for GLADIA_API_URL
  std::uint16_t port() const;

  // --- faults (apply to what comes next) ---
  // The next `times` inits answer `status` with Gladia's error body, its message `message`.
  void fail_inits(int times, unsigned status, const std::string& retry_after = {},
                  const std::string& message = "scripted failure");
  // Every init from now on answers 201 with this as the session's url (a broken or hostile upstream); empty: its own.
  void answer_inits_with_url(const std::string& url);
  // The next connection that brings its session past `bytes` committed audio bytes drops (no close frame)
  // or closes with `code` (code 0 = abrupt drop). That frame is never acknowledged; with `ack_lost` it was
  // received, counted and transcribed first (Gladia has it and its transcripts, the client never hears of them:
  // a final it completes is lost in flight), otherwise it is lost with the connection.
  void cut_after(std::size_t bytes, std::uint16_t code = 0, bool ack_lost = false);
  // Gladia ends a session itself (its 3-hour limit): the next `sessions` sessions each end when a frame would bring
  // them past `bytes` of audio. That frame is not taken (nor acknowledged); the session's last utterance is made final
  // and, `with_results`, sent with post_transcript and post_final_transcript, then the connection closes 1000;
  // without, it closes 1000 at once (those finals are lost in flight). Either way its result is ready for
  // GET /v2/live/{id}.
  void end_session_after(std::size_t bytes, int sessions = 1, bool with_results = true);
  // The next connection that brings its session past `bytes` takes that frame and acknowledges it, and the
  // connection's end (a TCP FIN, no close frame) leaves with that acknowledgment, in one segment: a reader that takes
  // the acknowledgment has seen the last of the connection. The socket stays open, and the fake reads no more of it.
  // The session goes on: a reconnect to its url works.
  void end_with_ack_after(std::size_t bytes);
  // Sessions are lost (the Gladia host that ran them went away): the next `sessions` sessions each lose their
  // connection (no close frame) when a frame would bring them past `bytes`, that frame not taken, and their url refuses
  // every connection from then on (401, as an expired token). The session's last utterance is made final, but that
  // final is lost in flight; its result is ready for GET /v2/live/{id}. With `takes_frame`, that frame is taken (and
  // in the last final) first, its acknowledgment lost with the connection: Gladia read it before the end.
  void lose_session_after(std::size_t bytes, int sessions = 1, bool takes_frame = false);
  // A session lost after the stop, with audio it never took: the next session to get past `bytes` takes no more audio
  // from there (what arrives is read, neither taken nor acknowledged nor transcribed: its host stopped working), and
  // is lost when stop_recording arrives, unread (the connection drops; its url refuses every connection from then on,
  // as with lose_session_after). Its last utterance is made final into its result, none of it sent.
  void lose_session_at_stop_after(std::size_t bytes);
  // A session whose every connection drops at the stop: as lose_session_at_stop_after, but the url refuses
  // connections (401) only for `refuse_for` after each drop, then takes them again, and the next stop_recording drops
  // that connection too. Its result is ready for GET /v2/live/{id} from the first drop.
  void drop_every_stop_after(std::size_t bytes, std::chrono::milliseconds refuse_for);
  // The next connection that brings its session past `bytes` stops reading (a stalled upstream): it keeps the
  // socket open and neither reads nor writes again. That frame is not taken.
  void stall_after(std::size_t bytes);
  int stalls() const;  // connections stalled so far
  void delay_acks(std::chrono::milliseconds d);
  // Its I/O threads stop for `d` (a host that does not get the CPU): returns once every one of them is held.
  // What arrives meanwhile waits in the kernel; for load it counts as arrived when the kernel received it.
  void hold_threads(std::chrono::milliseconds d);
  void send_unknown_types(bool on);
  void withhold_acks(bool on);  // audio is taken but never acknowledged
  // stop_recording ends the session as usual (its last final made, its result ready for GET /v2/live/{id}), but
  // nothing more is sent for it: the socket stays open and silent. GET /v2/live/{id} answers "processing" to its
  // first `processing_polls` requests (and to any before stop_recording).
  void hang_after_stop(bool on, int processing_polls = 0);
  // stop_recording ends the session as usual, but nothing of the end is sent: the connection closes with `code` at
  // once (0: as usual).
  void close_after_stop(std::uint16_t code);

  // --- observations ---
  int init_requests() const;
  int result_requests(const std::string& session_id = {}) const;  // GET /v2/live/{id} of the only/named session
  int ws_connections() const;
  std::vector<std::string> init_bodies() const;
  std::vector<std::string> init_targets() const;
  // The audio of the only (or the named) session as the fake took it: every frame it acknowledged (and any it took
  // while losing the ack on purpose, cut_after(..., ack_lost)), in the order it took them. Nothing is
  // de-duplicated: audio the relay replays twice appears twice, which is what the tests look for.
  std::string audio(const std::string& session_id = {}) const;
  std::size_t sessions() const;
  std::size_t audio_bytes(const std::string& session_id = {}) const;  // committed audio of the only/named session
  bool stopped(const std::string& session_id = {}) const;             // got stop_recording and closed 1000
  // When each chunk of audio arrived (benchmarks): session id, stream offset after the chunk, time.
  struct arrival {
    std::string session;
    std::size_t end = 0;
    std::chrono::steady_clock::time_point at;
  };
  void record_arrivals(bool on);
  std::vector<arrival> arrivals() const;
  std::vector<std::string> session_ids() const;

  // --- load figures (read_tags) ---
  struct load_figures {
    std::uint64_t streams = 0;           // WebSocket sessions seen
    std::uint64_t untagged_streams = 0;  // whose audio carried no readable tags
    std::uint64_t chunks = 0;            // audio messages received
    std::uint64_t bytes = 0;
    std::uint64_t frames = 0;       // tagged frames received
    std::uint64_t lost = 0;         // sequence gaps
    std::uint64_t duplicates = 0;   // a sequence number again, or going back
    std::uint64_t transcripts = 0;  // partials and finals sent
    std::uint64_t finals = 0;       // of them finals (each is a row the server stores)
    histogram relay_message;        // per upstream message: the frame that completed it, receive - send
    histogram relay_frame;          // every frame
    // Per upstream message: from the kernel's receipt of its last bytes (when the relay latency ends) to the fake's
    // read of it; the fake's own queueing on the core it shares with the loadgen.
    histogram read_delay;
    // The same for the frames sent within the window (set_window): the load's steady part, without its ramp-up
    // and wind-down.
    histogram relay_message_steady, relay_frame_steady;
    histogram read_delay_steady;  // of the messages the kernel received within the window
  };
  load_figures load() const;
  // Starts the figures afresh, with the tags' sequences and the window (a new load; also POST /reset).
  void reset_load();
  // Frames whose tag says they were sent in [from_ns, to_ns) (CLOCK_MONOTONIC, this machine's) also count in the
  // steady figures; none do until a window is set. Also GET /window?from=NS&to=NS (either may be left out).
  void set_window(std::int64_t from_ns, std::int64_t to_ns);
  // The figures as JSON (GET /stats of the fake answers the same).
  std::string load_json() const;

  struct impl;

private:
  std::shared_ptr<impl> impl_;
};

}  // namespace sw::test
