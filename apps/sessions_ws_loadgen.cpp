// sessions-ws-loadgen: load testing by actor simulation. N simulated participants (CAF actors) in rooms of a given
// size stream tagged PCM at real-time pace to a sessions-ws server, stop, and wait for the drain; the report says
// what the server did with them: connect time, the tool's own schedule lag, relay latency and loss (from the fake
// Gladia's reading of the frame tags), transcript fan-out latency, errors by close code and by error code, and the
// server's CPU, RSS, threads and context switches from /proc.
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "apps/audio_file.hpp"
#include "loadgen/loadgen.hpp"
#include "loadgen/verdict.hpp"
#include "net/client.hpp"
#include "net/tls_client.hpp"
#include "net/url.hpp"
#include "proto/rapidjson.hpp"
#include "tests/fakes/fake_gladia.hpp"

namespace {

const char* usage = R"(Usage: sessions-ws-loadgen [options]
Simulated participants stream to a sessions-ws server and the run is reported.

Target and identities
  --url ws://HOST[:PORT]    the server (default ws://127.0.0.1:3001); wss://HOST[:PORT] for TLS (port 443 when
                            not given), the server's certificate verified for HOST against the system's CAs
  --ca FILE                 with wss: trust the CAs in FILE (PEM) instead of the system's (as sessions-ws-stream)
  --secret S                mints the tokens: TRANSCRIPTION_JWT_SECRET (default: from the environment), or
                            SERVICE_API_SECRET with --egress
  --tokens FILE             tokens to use instead, one per line (reused round robin)
Load
  --participants N          simulated participants (default 10)
  --room-size R             participants per room (default 1); rooms are load-0, load-1, ...
  --ramp R                  new connections per second (default 200)
  --frame-ms MS             audio per frame, 10 to 100 (default 20)
  --duration S              seconds each participant streams (default 10)
  --stop-timeout S          bound on the drain after `stop` (default 30)
  --wav FILE                the audio (any WAV: libsndfile reads it, libsoxr resamples it to 16 kHz mono),
                            looped; default a synthetic voice
  --egress                  LiveKit egress connections instead (48 kHz stereo to /egress/audio)
  --floor                   the target is a bare receiver (bench/bare_receiver, W0): no drain after the
                            duration, each connection just ends
Upstream (what the server relays to)
  --embedded-upstream PORT  run the fake Gladia in this process on 127.0.0.1:PORT (point the server's
                            GLADIA_API_URL at http://127.0.0.1:PORT, GLADIA_API_KEY=fake-gladia-key)
  --upstream-session-limit MS  the embedded fake ends each Gladia session when its audio would pass MS (Gladia
                            ends a live session at 3 hours): the server must go on in a new one, losing nothing
  --upstream-lose-after MS  the embedded fake loses each Gladia session when its audio would pass MS (the host that
                            ran it went away: no reconnect gets through): the server must go on in a new one
  --upstream-stats URL      read the figures of a separate sessions-ws-fake-gladia (e.g. http://127.0.0.1:8089);
                            they start afresh as the run starts (POST /reset): one loadgen at a time per fake
Measurement and output
  --server-pid PID          the server's CPU (user/kernel), RSS, threads, context switches from /proc; RSS growth
                            per participant split into anonymous (heap, stacks: what the server holds) and
                            file-backed (code paged in once as it first runs)
  --json FILE               the report as JSON too
  --quiet                   no progress line
  --io-threads N            the tool's I/O threads (default 1)   --actor-threads N (default 1)
  --sndbuf BYTES            each connection's socket send buffer (default: the kernel's; a small one makes the
                            tool's own writes wait, as a client on a congested link does)
  --no-io-uring             a sendmsg per frame; by default the frames due in each 1 ms tick go to the kernel
                            in one io_uring submission (where the kernel allows io_uring; else a sendmsg each)
Steady window: from the moment every participant is connected and its STT ready (its first stt_status "ready":
the server's upstream connection is open; --egress streams are sent no status, so connected is enough) to a frame
before the first stop. The server's CPU, the tool's schedule lag, relay and fan-out latency are judged over it (the
ramp-up's handshakes, ours and the server's toward the upstream with the audio that waited for them, and the
wind-down's stops are bursts the load itself does not have); the whole run's are reported beside. A separate fake
upstream (--upstream-stats) learns the window by GET /window.
Relay latency: from a frame's send (its tag) to the moment the fake's kernel received the upstream message that
completes it (SO_TIMESTAMPNS; a message read together with the next one of its stream counts at the next one's
time). How late the fake then read it is the "upstream read delay", the tool's own queueing, reported apart.
Fan-out latency: from the fake's emit time in a transcript's text to the kernel's receipt of it at the
participant's socket. Finals the server recovered after an upstream connection went with them (utteranceId
"...-recovered-<n>") are counted apart ("finals recovered", JSON recoveredFinals), not in fan-out.
Sustain rule (the verdict): every participant connected, no frame lost, no errors (all over the whole run); relay
p99 <= 20 ms in the steady window; the tool's schedule lag p99 in the steady window <= 5 ms, otherwise the run is
"tool-bound" and says nothing about the server; so is a run whose relay p99 broke while the fake upstream read late
(its read delay p99 in the window over 5 ms: a fake that falls behind makes the server's sends wait for it). On a VM the hypervisor may take CPU time from the guest ("steal" in
/proc/stat): a run that missed its timing (tool-bound, or relay p99 alone over 20 ms) while more than 5 % of the
server's CPUs' time (--server-pid's affinity) or of the tool's was stolen is "machine-bound" and says nothing about
either. Frames lost, errors and participants not connected are never excused.
Exit codes: 0 every participant streamed and stopped cleanly, 1 some did not (see the report), 2 bad arguments.
)";

[[noreturn]] void bad(const std::string& what) {
  std::cerr << "sessions-ws-loadgen: " << what << "\n(see --help)\n";
  std::exit(2);
}

long number(const std::string& opt, const std::string& v, long lo, long hi) {
  char* end = nullptr;
  long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end || n < lo || n > hi)
    bad(opt + " needs a whole number from " + std::to_string(lo) + " to " + std::to_string(hi));
  return n;
}

struct proc_sample {
  bool ok = false;
  double user_s = 0, kernel_s = 0;
  long rss_kib = 0, threads = 0;
  // RSS's anonymous part (heap, stacks): what the server holds. The rest is file-backed (its code and libraries),
  // paged in once as code paths run for the first time, whatever the number of participants.
  long rss_anon_kib = -1;  // -1: the kernel does not say (RssAnon is in /proc/PID/status since Linux 4.5)
  long long ctx_switches = 0;
};

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The fields of a /proc/.../stat line from the 3rd on (after "pid (comm)", whose name may hold spaces), numbered as
// proc(5) numbers them: field n is at [n - 3]. Empty when unreadable.
std::vector<std::string> stat_fields(const std::filesystem::path& path) {
  std::vector<std::string> out;
  const std::string s = slurp(path);
  auto close = s.rfind(')');
  if (close == std::string::npos) return out;
  std::istringstream in(s.substr(close + 2));
  for (std::string f; in >> f;) out.push_back(f);
  return out;
}

proc_sample sample(int pid) {
  proc_sample p;
  if (pid <= 0) return p;
  const auto f = stat_fields("/proc/" + std::to_string(pid) + "/stat");
  if (f.size() < 24 - 2) return p;
  const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  p.user_s = std::stod(f[14 - 3]) / hz;
  p.kernel_s = std::stod(f[15 - 3]) / hz;
  p.threads = std::stol(f[20 - 3]);
  p.rss_kib = std::stol(f[24 - 3]) * (sysconf(_SC_PAGESIZE) / 1024);
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("RssAnon:", 0) == 0) p.rss_anon_kib = std::atol(line.c_str() + 8);
  // context switches of every thread (the process's own status counts its main thread only)
  std::error_code ec;
  for (auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream status(task.path() / "status");
    for (std::string line; std::getline(status, line);)
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 || line.rfind("nonvoluntary_ctxt_switches:", 0) == 0)
        p.ctx_switches += std::stoll(line.substr(line.find(':') + 1));
  }
  p.ok = true;
  return p;
}

// The kernel's TCP buffer memory, system-wide (/proc/net/sockstat "TCP: ... mem N", in pages): not in any RSS.
// On loopback it holds both ends of every connection (server, loadgen, fake upstream). -1 when unreadable.
long tcp_mem_kib() {
  std::ifstream in("/proc/net/sockstat");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("TCP:", 0) != 0) continue;
    auto at = line.find(" mem ");
    if (at == std::string::npos) return -1;
    return std::atol(line.c_str() + at + 5) * (sysconf(_SC_PAGESIZE) / 1024);
  }
  return -1;
}

double self_cpu_s() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// CPU seconds of this process's threads named `comm` (the embedded fake Gladia's: "fake.gladia"), from the kernel's
// accounting ticks; 0 when there are none.
double threads_cpu_s(const std::string& comm) {
  double ticks = 0;
  std::error_code ec;
  for (auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
    if (slurp(task.path() / "comm") != comm + "\n") continue;
    const auto f = stat_fields(task.path() / "stat");
    if (f.size() >= 15 - 2) ticks += std::stod(f[14 - 3]) + std::stod(f[15 - 3]);  // utime + stime
  }
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

std::map<int, long long> steal_now() {
  return sw::load::steal_ticks(slurp("/proc/stat"));
}

std::string ms(double us) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", us / 1000.0);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  sw::load::settings s;
  if (const char* e = std::getenv("TRANSCRIPTION_JWT_SECRET")) s.secret = e;
  std::string url = "ws://127.0.0.1:3001", json_file, tokens_file, wav, upstream_stats;
  int embedded_port = 0, server_pid = 0;
  std::chrono::milliseconds session_limit{0};
  std::chrono::milliseconds lose_after{0};
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) bad(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::cout << usage;
      return 0;
    } else if (a == "--url") {
      url = next();
    } else if (a == "--ca") {
      s.ca_file = next();
    } else if (a == "--secret") {
      s.secret = next();
    } else if (a == "--tokens") {
      tokens_file = next();
    } else if (a == "--participants") {
      s.participants = static_cast<int>(number(a, next(), 1, 100'000));
    } else if (a == "--room-size") {
      s.room_size = static_cast<int>(number(a, next(), 1, 10'000));
    } else if (a == "--ramp") {
      s.ramp_per_s = static_cast<double>(number(a, next(), 1, 100'000));
    } else if (a == "--frame-ms") {
      s.frame = std::chrono::milliseconds(number(a, next(), 10, 100));
    } else if (a == "--duration") {
      s.duration = std::chrono::seconds(number(a, next(), 1, 86'400));
    } else if (a == "--stop-timeout") {
      s.stop_timeout = std::chrono::seconds(number(a, next(), 1, 3'600));
    } else if (a == "--wav") {
      wav = next();
    } else if (a == "--egress") {
      s.egress = true;
    } else if (a == "--floor") {
      s.floor = true;
    } else if (a == "--embedded-upstream") {
      embedded_port = static_cast<int>(number(a, next(), 1, 65'535));
    } else if (a == "--upstream-session-limit") {
      session_limit = std::chrono::milliseconds(number(a, next(), 100, 86'400'000));
    } else if (a == "--upstream-lose-after") {
      lose_after = std::chrono::milliseconds(number(a, next(), 100, 86'400'000));
    } else if (a == "--upstream-stats") {
      upstream_stats = next();
    } else if (a == "--server-pid") {
      server_pid = static_cast<int>(number(a, next(), 1, 1 << 30));
    } else if (a == "--json") {
      json_file = next();
    } else if (a == "--quiet") {
      quiet = true;
    } else if (a == "--io-threads") {
      s.io_threads = static_cast<int>(number(a, next(), 1, 64));
    } else if (a == "--actor-threads") {
      s.actor_threads = static_cast<int>(number(a, next(), 1, 64));
    } else if (a == "--sndbuf") {
      s.sndbuf = static_cast<int>(number(a, next(), 1024, 64 << 20));
    } else if (a == "--no-io-uring") {
      s.batch_sends = false;
    } else {
      bad("unknown argument " + a);
    }
  }
  {
    auto u = sw::net::parse_url(url);
    if (!u || (u->scheme != "ws" && u->scheme != "wss"))
      bad("--url must be ws://HOST[:PORT] or wss://HOST[:PORT], not " + sw::net::shown_url(url));
    if (u->target != "/") bad("--url takes no path: the tool connects to /api/realtime/transcribe (or /egress/audio)");
    s.host = u->host;
    s.port = u->port;
    s.tls = u->secure();
  }
  if (!s.ca_file.empty()) {
    if (!s.tls) bad("--ca is for a wss:// --url");
    std::string error;
    if (!sw::net::client_tls_context(s.ca_file, error)) bad(error);
  }
  if (s.tls && s.floor) bad("--floor is for a ws:// --url (the bare receiver speaks no TLS)");
  if (session_limit.count() > 0 && !embedded_port) bad("--upstream-session-limit is for --embedded-upstream");
  if (lose_after.count() > 0 && !embedded_port) bad("--upstream-lose-after is for --embedded-upstream");
  if (!tokens_file.empty()) {
    std::ifstream in(tokens_file);
    if (!in) bad("cannot read " + tokens_file);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) s.tokens.push_back(line);
    if (s.tokens.empty()) bad(tokens_file + " holds no token");
  } else if (s.secret.empty()) {
    bad("--secret (or TRANSCRIPTION_JWT_SECRET) or --tokens is needed");
  }
  if (!wav.empty()) {
    try {
      s.audio = sw::load_audio(wav);
    } catch (const std::exception& e) {
      bad(wav + ": " + e.what());
    }
  }
  std::unique_ptr<sw::test::fake_gladia> fake;
  if (embedded_port) {
    auto o = sw::test::fake_gladia::load_options();
    o.port = static_cast<std::uint16_t>(embedded_port);
    o.session_limit = session_limit;
    o.lose_after = lose_after;
    // Same priority as the tool's own threads. The relay latency ends when the kernel received a chunk, so the fake's
    // own queueing on this core shows apart (upstream read delay); its acks still leave when it gets to them, as a
    // slow upstream's would. A saturated tool core shows as schedule lag (verdict "tool-bound").
    try {
      fake = std::make_unique<sw::test::fake_gladia>(o);
    } catch (const std::exception& e) {
      std::cerr << "sessions-ws-loadgen: the embedded upstream cannot listen on " << embedded_port << ": " << e.what()
                << "\n";
      return 2;
    }
  }

  // The upstream learns the steady window (its relay figures for it are by send time, so a moment's delay in
  // telling a separate fake loses nothing but the frames sent in that moment).
  std::mutex window_mu;
  std::vector<std::thread> window_calls;
  if (fake) {
    s.on_window = [&fake](std::int64_t from, std::int64_t to) { fake->set_window(from, to); };
  } else if (!upstream_stats.empty()) {
    // Its figures so far are an earlier load's, whose participants were numbered from 0 as these are.
    try {
      auto r = sw::net::http_fetch(upstream_stats + "/reset", "POST");
      if (r.status != 200) {
        std::cerr << "sessions-ws-loadgen: " << upstream_stats << "/reset answered HTTP " << r.status
                  << ": is it a sessions-ws-fake-gladia?\n";
        return 2;
      }
    } catch (const std::exception& e) {
      std::cerr << "sessions-ws-loadgen: --upstream-stats " << upstream_stats << ": " << e.what() << "\n";
      return 2;
    }
    s.on_window = [&](std::int64_t from, std::int64_t to) {
      std::lock_guard<std::mutex> lock(window_mu);
      window_calls.emplace_back([url = upstream_stats, from, to] {
        try {
          auto r = sw::net::http_fetch(url + "/window?from=" + std::to_string(from) + "&to=" + std::to_string(to));
          if (r.status != 200)
            std::cerr << "sessions-ws-loadgen: " << url << "/window answered HTTP " << r.status << "\n";
        } catch (const std::exception& e) {
          std::cerr << "sessions-ws-loadgen: " << url << "/window: " << e.what() << "\n";
        }
      });
    };
  }

  sw::load::live_figures live;
  proc_sample before = sample(server_pid), at_full, at_end;
  const long tcp_before_kib = tcp_mem_kib();
  long tcp_end_kib = -1;
  double self_before = self_cpu_s(), self_full = 0, self_end = 0;
  const std::string fake_threads = "fake.gladia";  // tests/fakes/fake_gladia.cpp names its threads so
  double fake_before = threads_cpu_s(fake_threads), fake_full = 0, fake_end = 0;
  // The hypervisor's steal on the server's CPUs and on ours: a run that missed its timing under it is machine-bound.
  const std::vector<int> server_cpus = server_pid > 0 ? sw::load::cpus_of(server_pid) : std::vector<int>{};
  const std::vector<int> tool_cpus = sw::load::cpus_of(0);
  std::map<int, long long> steal_before = steal_now(), steal_full, steal_end;
  std::uint64_t frames_full = 0, frames_end = 0;
  bool full = false, window_closed = false;
  auto t_full = std::chrono::steady_clock::now(), t_end = t_full;
  std::uint64_t last_frames = 0;
  auto tick = [&] {
    const int connected = live.connected.load();
    if (!full && live.window_from.load() != sw::load::live_figures::never) {
      full = true;
      at_full = sample(server_pid);
      self_full = self_cpu_s();
      fake_full = threads_cpu_s(fake_threads);
      steal_full = steal_now();
      frames_full = live.frames_sent.load();
      t_full = std::chrono::steady_clock::now();
    } else if (full && !window_closed && live.window_to.load() != sw::load::live_figures::never) {
      window_closed = true;
      at_end = sample(server_pid);
      tcp_end_kib = tcp_mem_kib();
      self_end = self_cpu_s();
      fake_end = threads_cpu_s(fake_threads);
      steal_end = steal_now();
      frames_end = live.frames_sent.load();
      t_end = std::chrono::steady_clock::now();
    }
    if (quiet) return;
    const auto frames = live.frames_sent.load();
    std::string relay;
    if (fake) relay = " relay p99 " + ms(fake->load().relay_message.quantile_us(0.99)) + " ms,";
    std::fprintf(stderr,
                 "\r\033[Kconnected %d/%d (connecting %d, done %d), %llu frames/s,%s transcripts %llu, errors %llu",
                 connected, s.participants, live.connecting.load(), live.finished.load(),
                 static_cast<unsigned long long>(frames - last_frames), relay.c_str(),
                 static_cast<unsigned long long>(live.transcripts.load()),
                 static_cast<unsigned long long>(live.errors.load() + live.failed.load()));
    last_frames = frames;
  };
  auto result = sw::load::run(s, live, tick);
  if (!quiet) std::fprintf(stderr, "\n");
  {
    std::lock_guard<std::mutex> lock(window_mu);
    for (auto& t : window_calls) t.join();
  }
  if (!window_closed) {  // the steady window never closed on a tick: take the end of the run
    at_end = sample(server_pid);
    tcp_end_kib = tcp_mem_kib();
    self_end = self_cpu_s();
    fake_end = threads_cpu_s(fake_threads);
    steal_end = steal_now();
    frames_end = live.frames_sent.load();
    t_end = std::chrono::steady_clock::now();
    if (!full) {
      steal_full = steal_before;
      at_full = before;
      self_full = self_before;
      fake_full = fake_before;
      frames_full = 0;
    }
  }

  // --- the figures ---
  int connected = 0, clean = 0, rejected = 0, unexpected = 0, failed = 0;
  std::uint64_t sent = 0, partials = 0, finals = 0, recovered = 0, min_finals = ~0ULL, max_finals = 0;
  std::map<std::string, int> closes, rejections, failures;
  std::map<std::string, std::uint64_t> codes;
  for (auto& p : result.participants) {
    connected += p.connected;
    clean += p.stopped_cleanly;
    sent += p.frames_sent;
    partials += p.partials;
    finals += p.finals;
    recovered += p.recovered;
    if (p.connected) {
      min_finals = std::min<std::uint64_t>(min_finals, p.finals);
      max_finals = std::max<std::uint64_t>(max_finals, p.finals);
    }
    if (p.rejected_status) {
      ++rejected;
      ++rejections[std::to_string(p.rejected_status) + " " + p.rejected_body.substr(0, 80)];
    }
    if (p.unexpected_close) {
      ++unexpected;
      ++closes[std::to_string(p.close_code)];
    }
    if (!p.failure.empty() && !p.unexpected_close) {
      ++failed;
      ++failures[p.failure];
    }
    for (auto& [c, n] : p.error_codes) codes[c] += n;
  }
  if (min_finals == ~0ULL) min_finals = 0;
  sw::test::fake_gladia::load_figures up;
  bool have_upstream = false;
  // relay latency (ms): per upstream message (p50, p99, max) and every frame, over the whole run and in the window
  struct latency {
    double p50 = 0, p99 = 0, max = 0;
    std::uint64_t count = 0;
  };
  auto of = [](const sw::histogram& h) {
    return latency{h.quantile_us(0.5) / 1000, h.quantile_us(0.99) / 1000, h.max_us() / 1000, h.count()};
  };
  latency relay, relay_frame, relay_steady, relay_frame_steady, read_delay, read_delay_steady;
  if (fake) {
    up = fake->load();
    have_upstream = true;
    relay = of(up.relay_message);
    relay_frame = of(up.relay_frame);
    relay_steady = of(up.relay_message_steady);
    relay_frame_steady = of(up.relay_frame_steady);
    read_delay = of(up.read_delay);
    read_delay_steady = of(up.read_delay_steady);
  } else if (!upstream_stats.empty()) {
    try {
      auto r = sw::net::http_fetch(upstream_stats + "/stats");
      rapidjson::Document d;
      if (r.status == 200 && sw::parse_json(d, r.body) && d.IsObject()) {
        up.frames = sw::json_count(d, "frames");
        up.lost = sw::json_count(d, "lost");
        up.duplicates = sw::json_count(d, "duplicates");
        up.untagged_streams = sw::json_count(d, "untaggedStreams");
        have_upstream = true;
        auto read = [&](const char* key, latency& l) {
          if (!d.HasMember(key) || !d[key].IsObject()) return;
          const auto& o = d[key];
          l = {sw::json_number(o, "p50"), sw::json_number(o, "p99"), sw::json_number(o, "max"),
               static_cast<std::uint64_t>(sw::json_count(o, "count"))};
        };
        read("relayMessageMs", relay);
        read("relayFrameMs", relay_frame);
        read("relayMessageSteadyMs", relay_steady);
        read("relayFrameSteadyMs", relay_frame_steady);
        read("readDelayMs", read_delay);
        read("readDelaySteadyMs", read_delay_steady);
      } else {
        std::cerr << "sessions-ws-loadgen: " << upstream_stats << "/stats answered HTTP " << r.status << "\n";
      }
    } catch (const std::exception& e) {
      std::cerr << "sessions-ws-loadgen: " << upstream_stats << "/stats: " << e.what() << "\n";
    }
  }
  // What the verdict judges: the steady window's figures, or the whole run's when there was no window (not every
  // participant connected, and the verdict says so anyway).
  const std::int64_t window_from = live.window_from.load(), window_to = live.window_to.load();
  const bool have_window = window_from != sw::load::live_figures::never;
  const sw::histogram& lag_judged = have_window ? result.lag_steady : result.lag;
  const sw::histogram& fanout_judged = have_window ? result.fanout_steady : result.fanout;
  const latency relay_judged = have_window && relay_steady.count ? relay_steady : relay;
  const latency relay_frame_judged = have_window && relay_frame_steady.count ? relay_frame_steady : relay_frame;
  const latency read_delay_judged = have_window && read_delay_steady.count ? read_delay_steady : read_delay;
  const double window_s = std::max(1e-9, std::chrono::duration<double>(t_end - t_full).count());
  const std::uint64_t window_frames = frames_end - frames_full;
  const double server_cpu = (at_end.user_s + at_end.kernel_s) - (at_full.user_s + at_full.kernel_s);
  const double server_us_per_frame = window_frames ? server_cpu / static_cast<double>(window_frames) * 1e6 : 0;
  const double tool_cpu = self_end - self_full;
  const double fake_cpu = fake_end - fake_full;  // of tool_cpu: the embedded fake Gladia's threads
  // Frames sent that the upstream never had: a frame it got twice (a relay's replay after a reconnect, of audio whose
  // acknowledgement was lost) counts once.
  const std::int64_t lost = have_upstream && !s.egress
                                ? static_cast<std::int64_t>(sent) - static_cast<std::int64_t>(up.frames - up.duplicates)
                                : 0;
  const double lag_p99 = lag_judged.quantile_us(0.99);
  const double ticks_per_s = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double steal_server = sw::load::steal_share(steal_full, steal_end, server_cpus, window_s, ticks_per_s);
  const double steal_tool = sw::load::steal_share(steal_full, steal_end, tool_cpus, window_s, ticks_per_s);
  sw::load::run_figures judged;
  judged.participants = s.participants;
  judged.connected = connected;
  judged.lost = lost;
  judged.errors = rejected || unexpected || failed || !codes.empty();
  judged.have_upstream = have_upstream;
  judged.relay_p99_ms = relay_judged.p99;
  judged.upstream_read_delay_p99_ms = read_delay_judged.p99;
  judged.lag_p99_ms = lag_p99 / 1000.0;
  judged.steal_server = steal_server;
  judged.steal_tool = steal_tool;
  const std::string verdict = sw::load::judge(judged);

  // --- the table ---
  auto row = [](const std::string& k, const std::string& v) { std::printf("  %-34s %s\n", k.c_str(), v.c_str()); };
  std::printf("sessions-ws-loadgen: %d participants, rooms of %d, %lld ms frames, %lld s each%s\n", s.participants,
              s.room_size, static_cast<long long>(s.frame.count()), static_cast<long long>(s.duration.count()),
              s.egress ? " (LiveKit egress)" : "");
  row("connected",
      std::to_string(connected) + "/" + std::to_string(s.participants) + ", stopped cleanly " + std::to_string(clean));
  row("connect time p50 / p99 / max", ms(result.connect.quantile_us(0.5)) + " / " +
                                          ms(result.connect.quantile_us(0.99)) + " / " + ms(result.connect.max_us()) +
                                          " ms");
  auto three = [](const sw::histogram& h) {
    return ms(h.quantile_us(0.5)) + " / " + ms(h.quantile_us(0.99)) + " / " + ms(h.max_us()) + " ms";
  };
  auto three_ms = [](const latency& l) {
    return ms(l.p50 * 1000) + " / " + ms(l.p99 * 1000) + " / " + ms(l.max * 1000) + " ms";
  };
  const double window_seconds = have_window && window_to != sw::load::live_figures::never
                                    ? static_cast<double>(window_to - window_from) / 1e9
                                    : 0;
  if (have_window) {
    char b[96];
    std::snprintf(b, sizeof b,
                  "%.2f s (every participant connected and its STT ready, to a frame before the first stop)",
                  window_seconds);
    row("steady window", b);
  } else {
    row("steady window", "none (not every participant connected with its STT ready): figures of the whole run");
  }
  row("schedule lag p50 / p99 / max",
      three(lag_judged) + (have_window ? " (whole run " + three(result.lag) + ")" : ""));
  row("frames sent", std::to_string(sent));
  if (have_upstream) {
    row("frames at the upstream", std::to_string(up.frames) + " (lost " + std::to_string(lost) + ", gaps " +
                                      std::to_string(up.lost) + ", duplicates " + std::to_string(up.duplicates) + ")");
    row("relay p50 / p99 / max (per message)",
        three_ms(relay_judged) + (have_window ? " (whole run " + three_ms(relay) + ")" : ""));
    row("relay p50 / p99 / max (every frame)",
        three_ms(relay_frame_judged) + (have_window ? " (whole run " + three_ms(relay_frame) + ")" : ""));
    if (read_delay.count)  // the relay latency ends at the kernel's receipt; this is the upstream's own queueing
      row("upstream read delay p50 / p99 / max",
          read_delay_steady.count ? three_ms(read_delay_steady) + " (whole run " + three_ms(read_delay) + ")"
                                  : three_ms(read_delay) + " (whole run)");
    if (up.untagged_streams) row("streams without readable tags", std::to_string(up.untagged_streams));
  }
  row("fan-out p50 / p99 / max",
      three(fanout_judged) + (have_window ? " (whole run " + three(result.fanout) + ")" : ""));
  if (result.read_delay.count())  // fan-out ends at the kernel's receipt; this is the tool's own queueing
    row("participant read delay p50 / p99 / max", three(result.read_delay) + " (whole run)");
  row("transcripts received", std::to_string(partials) + " partials, " + std::to_string(finals) +
                                  " finals (finals per stream " + std::to_string(min_finals) + ".." +
                                  std::to_string(max_finals) + ")");
  if (recovered)
    row("finals recovered", std::to_string(recovered) + " (lost with an upstream connection; not in fan-out)");
  for (auto& [k, n] : rejections) row("rejected with HTTP", k + " x" + std::to_string(n));
  for (auto& [k, n] : closes) row("unexpected close", k + " x" + std::to_string(n));
  for (auto& [k, n] : failures) row("failure", k + " x" + std::to_string(n));
  for (auto& [k, n] : codes) row("error/warning message", k + " x" + std::to_string(n));
  if (before.ok) {
    row("server CPU in the steady window",
        std::to_string(server_cpu) + " s (user " + std::to_string(at_end.user_s - at_full.user_s) + ", kernel " +
            std::to_string(at_end.kernel_s - at_full.kernel_s) + ") over " + std::to_string(window_s) + " s");
    char b[64];
    std::snprintf(b, sizeof b, "%.2f us", server_us_per_frame);
    row("server CPU per frame", b);
    row("server RSS / threads", std::to_string(at_end.rss_kib / 1024) + " MiB / " + std::to_string(at_end.threads));
    const double per = 1.0 / std::max(1, s.participants);
    if (at_end.rss_anon_kib >= 0 && before.rss_anon_kib >= 0) {
      std::snprintf(
          b, sizeof b, "%.1f KiB anonymous + %.1f KiB file-backed",
          static_cast<double>(at_end.rss_anon_kib - before.rss_anon_kib) * per,
          static_cast<double>((at_end.rss_kib - at_end.rss_anon_kib) - (before.rss_kib - before.rss_anon_kib)) * per);
      row("server RSS growth per participant", b);
    }
    row("server context switches (window)", std::to_string(at_end.ctx_switches - at_full.ctx_switches));
  }
  {
    auto cpus = [](const std::vector<int>& v) {
      std::string out;
      for (int c : v) out += (out.empty() ? "" : ",") + std::to_string(c);
      return out;
    };
    char b[200], t[100];
    std::snprintf(t, sizeof t, "%.1f %% of the tool's (CPUs %s)", steal_tool * 100, cpus(tool_cpus).c_str());
    if (server_cpus.empty())
      std::snprintf(b, sizeof b, "%s", t);
    else
      std::snprintf(b, sizeof b, "%.1f %% of the server's (CPUs %s), %s", steal_server * 100, cpus(server_cpus).c_str(),
                    t);
    row("hypervisor steal (window)", b);
  }
  if (tcp_before_kib >= 0 && tcp_end_kib >= 0)
    row("kernel TCP buffers (all ends)",
        std::to_string((tcp_end_kib - tcp_before_kib) / 1024) + " MiB (" +
            std::to_string((tcp_end_kib - tcp_before_kib) / std::max(1, s.participants)) +
            " KiB per participant, /proc/net/sockstat)");
  row("tool CPU in the window (with fake)",
      std::to_string(tool_cpu) + " s = " + std::to_string(tool_cpu / window_s) + " cores");
  if (fake)
    row("of it the embedded fake Gladia",
        std::to_string(fake_cpu) + " s = " + std::to_string(fake_cpu / window_s) + " cores");
  row("tool's sends", s.tls             ? std::string("a TLS write per frame (wss)")
                      : result.io_uring ? std::to_string(result.batched_frames) + " frames in " +
                                              std::to_string(result.batch_submissions) + " io_uring submissions"
                      : s.batch_sends ? std::string("a sendmsg per frame (io_uring refused by the kernel)")
                                      : std::string("a sendmsg per frame (--no-io-uring)"));
  row("frames not taken whole at once", std::to_string(result.not_taken_whole) + " (their rest went later)");
  row("verdict", verdict);

  if (!json_file.empty()) {
    std::ofstream out(json_file);
    auto q = [](const sw::histogram& h) {
      return "{\"p50\":" + ms(h.quantile_us(0.5)) + ",\"p99\":" + ms(h.quantile_us(0.99)) +
             ",\"max\":" + ms(h.max_us()) + ",\"count\":" + std::to_string(h.count()) + "}";
    };
    auto lq = [](const latency& l) {
      return "{\"p50\":" + std::to_string(l.p50) + ",\"p99\":" + std::to_string(l.p99) +
             ",\"max\":" + std::to_string(l.max) + ",\"count\":" + std::to_string(l.count) + "}";
    };
    out << "{\"participants\":" << s.participants << ",\"roomSize\":" << s.room_size
        << ",\"frameMs\":" << s.frame.count() << ",\"durationS\":" << s.duration.count()
        << ",\"egress\":" << (s.egress ? "true" : "false") << ",\"connected\":" << connected
        << ",\"stoppedCleanly\":" << clean << ",\"rejected\":" << rejected << ",\"unexpectedCloses\":" << unexpected
        << ",\"failures\":" << failed << ",\"framesSent\":" << sent << ",\"framesUpstream\":" << up.frames
        << ",\"lost\":" << lost << ",\"connectMs\":" << q(result.connect) << ",\"lagMs\":" << q(result.lag)
        << ",\"relayMs\":" << lq(relay) << ",\"relayFrameMs\":" << lq(relay_frame)
        << ",\"upstreamReadDelayMs\":" << lq(read_delay) << ",\"upstreamReadDelaySteadyMs\":" << lq(read_delay_steady)
        << ",\"fanoutMs\":" << q(result.fanout) << ",\"participantReadDelayMs\":" << q(result.read_delay)
        << ",\"steady\":{\"window\":" << (have_window ? "true" : "false") << ",\"seconds\":" << window_seconds
        << ",\"fromNs\":" << (have_window ? window_from : 0) << ",\"toNs\":" << (have_window ? window_to : 0)
        << ",\"lagMs\":" << q(lag_judged) << ",\"relayMs\":" << lq(relay_judged)
        << ",\"relayFrameMs\":" << lq(relay_frame_judged) << ",\"fanoutMs\":" << q(fanout_judged) << "}"
        << ",\"partials\":" << partials << ",\"finals\":" << finals << ",\"recoveredFinals\":" << recovered
        << ",\"errorCodes\":{";
    bool first = true;
    for (auto& [k, n] : codes) {
      out << (first ? "" : ",") << "\"" << k << "\":" << n;
      first = false;
    }
    out << "},\"closeCodes\":{";
    first = true;
    for (auto& [k, n] : closes) {
      out << (first ? "" : ",") << "\"" << k << "\":" << n;
      first = false;
    }
    out << "},\"server\":{\"cpuS\":" << server_cpu << ",\"userS\":" << (at_end.user_s - at_full.user_s)
        << ",\"kernelS\":" << (at_end.kernel_s - at_full.kernel_s) << ",\"usPerFrame\":" << server_us_per_frame
        << ",\"rssKiB\":" << at_end.rss_kib << ",\"rssBeforeKiB\":" << before.rss_kib;
    if (at_end.rss_anon_kib >= 0 && before.rss_anon_kib >= 0)
      out << ",\"rssAnonKiB\":" << at_end.rss_anon_kib << ",\"rssAnonBeforeKiB\":" << before.rss_anon_kib;
    out << ",\"tcpMemKiB\":" << tcp_end_kib << ",\"tcpMemBeforeKiB\":" << tcp_before_kib
        << ",\"threads\":" << at_end.threads << ",\"contextSwitches\":" << (at_end.ctx_switches - at_full.ctx_switches)
        << "},\"windowS\":" << window_s << ",\"windowFrames\":" << window_frames << ",\"toolCpuS\":" << tool_cpu
        << ",\"toolCores\":" << tool_cpu / window_s;
    if (fake) out << ",\"fakeCpuS\":" << fake_cpu << ",\"fakeCores\":" << fake_cpu / window_s;
    out << ",\"steal\":{\"server\":" << steal_server << ",\"tool\":" << steal_tool << "}";
    out << ",\"toolSends\":{\"tls\":" << (s.tls ? "true" : "false")
        << ",\"ioUring\":" << (result.io_uring ? "true" : "false") << ",\"submissions\":" << result.batch_submissions
        << ",\"batchedFrames\":" << result.batched_frames << ",\"notTakenWhole\":" << result.not_taken_whole
        << "},\"verdict\":\"" << verdict << "\"}\n";
  }
  return connected == s.participants && clean == s.participants && !rejected && !unexpected && !failed ? 0 : 1;
}
