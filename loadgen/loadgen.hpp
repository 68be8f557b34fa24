// sessions-ws-loadgen's engine: simulated participants against a real server, the way browsers and LiveKit egress
// drive it. Each participant is a CAF actor that owns its decisions (when to connect, stream, stop, what counts as an
// error); its socket is a raw WebSocket client on the shared Asio runtime whose frames are prepared and masked in
// advance (only the 20-byte tag of proto/load_tag.hpp is written per frame), sent on an absolute schedule.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "telemetry/histogram.hpp"

namespace sw::load {

struct settings {
  std::string host = "127.0.0.1";
  std::uint16_t port = 3001;
  // wss: TLS to the server, verified (its certificate and host name, with SNI) against the system's CA store or
  // `ca_file` instead. Each frame is then encrypted and written on its own (no io_uring batch), and a transcript
  // counts as arrived when the tool decrypted it (no kernel receipt time through TLS).
  bool tls = false;
  std::string ca_file;
  int participants = 10;
  int room_size = 1;
  double ramp_per_s = 200;  // new connections per second
  std::chrono::milliseconds frame{20};
  std::chrono::seconds duration{10};
  std::chrono::seconds stop_timeout{30};  // after `stop`: the last `stt_status: stopped` and the close
  std::string secret;                     // TRANSCRIPTION_JWT_SECRET (or SERVICE_API_SECRET for egress)
  std::vector<std::string> tokens;        // given tokens (one per participant, reused round robin), else minted
  std::vector<std::int16_t> audio;        // 16 kHz mono PCM16: the source, looped (empty: a synthetic voice)
  bool egress = false;                    // LiveKit egress connections: 48 kHz stereo to /egress/audio
  bool floor = false;  // against a bare receiver (bench/bare_receiver): no drain expected, the connection just ends
  std::string room_prefix = "load";
  int io_threads = 1;
  int actor_threads = 1;
  // A tick's frames go to the kernel in one io_uring submission (one syscall for all of them) where the kernel
  // allows io_uring; false, or no io_uring: a sendmsg per frame.
  bool batch_sends = true;
  int sndbuf = 0;  // SO_SNDBUF of each connection (0: the kernel's, which on loopback grows to megabytes)
  // Called when the steady window opens (every participant live, live_figures: from_ns, to_ns = INT64_MAX) and when it
  // closes (the first participant stops or is closed: from_ns, to_ns), in CLOCK_MONOTONIC nanoseconds, from an
  // actor thread. The relay's figures for the window come from the upstream, which learns the window this way.
  std::function<void(std::int64_t from_ns, std::int64_t to_ns)> on_window;
};

// What one participant saw.
struct participant_result {
  bool connected = false;
  bool stopped_cleanly = false;  // `stt_status: stopped` after our stop, then close 1000
  unsigned rejected_status = 0;  // HTTP status of a refused upgrade
  std::string rejected_body;
  std::uint16_t close_code = 0;   // the server's close (0: none seen)
  bool unexpected_close = false;  // closed before our stop (or not 1000 after it)
  std::string failure;            // a network failure or timeout, in words
  std::uint64_t frames_sent = 0;
  std::uint64_t partials = 0, finals = 0;
  // Of the finals, those the server recovered after its upstream connection was lost with them in flight
  // (`utteranceId` "…-recovered-<n>"): their stamp is when the upstream first sent them, so no fan-out figure.
  std::uint64_t recovered = 0;
  std::map<std::string, std::uint64_t> error_codes;  // `error` / `warning` messages by code
  double connect_ms = 0;
};

// Live figures while the run goes (read by the progress line; updated from the I/O threads).
struct live_figures {
  static constexpr std::int64_t never = INT64_MAX;
  std::atomic<int> connecting{0}, connected{0}, finished{0}, failed{0};
  std::atomic<int> ever_live{0};  // participants that were once connected with their STT ready
  std::atomic<std::uint64_t> frames_sent{0}, transcripts{0}, errors{0};
  // The steady window in CLOCK_MONOTONIC nanoseconds: from the moment every participant is connected and its STT is
  // ready (its first `stt_status: ready`: the server's upstream connection is open; an egress stream or a bare
  // receiver sends nothing, so connected is enough there) to a frame period before the first stop (or to the first
  // close, whichever comes first). Its figures are those of the load itself; the ramp-up (a burst of handshakes, here
  // and toward the upstream, with the audio that waited for them) and the wind-down (a burst of stops and drains) are
  // reported beside them.
  std::atomic<std::int64_t> window_from{never}, window_to{never};
  bool in_window(std::int64_t ns) const {
    return ns >= window_from.load(std::memory_order_relaxed) && ns < window_to.load(std::memory_order_relaxed);
  }
};

struct run_result {
  std::vector<participant_result> participants;
  histogram connect;        // TCP connect to 101
  histogram lag;            // how late each frame left against its schedule
  histogram fanout;         // transcript emitted by the upstream (its stamp) to received here
  histogram lag_steady;     // the same for the frames due within the steady window
  histogram fanout_steady;  // the same for the transcripts emitted within the steady window
  histogram read_delay;     // from the kernel's receipt of a read's bytes to the read (the tool's own queueing)
  double wall_s = 0;        // from the first connection to the last participant's end
  // How the frames went to the kernel: through io_uring (every lane had it), in how many submissions (syscalls),
  // and how many frames that way (the others: a sendmsg each, or the rest of a frame the socket did not take whole).
  bool io_uring = false;
  std::uint64_t batch_submissions = 0, batched_frames = 0;
  std::uint64_t not_taken_whole = 0;  // audio frames a full socket took in part or not at all (their rest went later)
};

// Runs the whole load: connects, streams, stops, collects. `tick` is called about once a second from the calling
// thread with the live figures (the progress line).
run_result run(const settings& s, live_figures& live, const std::function<void()>& tick);

// The audio a participant sends when no file is given: a voiced, varying tone (no silence: STT providers bill it).
std::vector<std::int16_t> synthetic_voice(double seconds);

}  // namespace sw::load
