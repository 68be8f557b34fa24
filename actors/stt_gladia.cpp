#include "actors/stt_gladia.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <limits>

#include <boost/circular_buffer.hpp>

#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "net/url.hpp"
#include "proto/gladia_message.hpp"
#include "proto/json.hpp"
#include "proto/rapidjson.hpp"

namespace sw {

namespace {

constexpr std::size_t chunk_bytes = 3200;  // ~100 ms of PCM16 16 kHz mono per upstream frame
// Audio handed to the upstream connection and not yet written, at most (whole chunks: one more can pass it). What
// waits beyond it stays in the replay buffer, the only place a stream's audio is held (STT_REPLAY_BUFFER_BYTES).
constexpr std::size_t in_flight_bytes = 16 * chunk_bytes;
constexpr int max_attempts = 5;  // per init, and per connection drop
// Stretches of a stream whose finals may have been lost with a connection, kept at most (the oldest goes first).
constexpr std::size_t max_gaps = 64;
// After stop, while Gladia's result of the session is not ready yet: asked again this often (within the bound).
constexpr std::chrono::milliseconds result_poll{500};
constexpr std::uint64_t bytes_per_second = 32'000;  // PCM16 16 kHz mono
// Gladia ending a session that took less audio than this counts towards giving up (max_attempts such ends in a row):
// a session ended at its 3-hour limit goes on in a new one, a Gladia that ends every session at once does not loop.
constexpr std::uint64_t short_session_bytes = 60 * bytes_per_second;
// The client's audio paused with audio outstanding, and nothing acknowledged for this long since (Gladia acknowledges
// within milliseconds): the connection is asked once whether Gladia ended it unseen (a TCP end that came with its last
// message wakes no read: net/edge_socket.hpp). While audio flows, the next write finds a connection that is gone; with
// nothing more to send (the stream's audio all sent, a muted participant) only the ack watchdog (STT_ACK_TIMEOUT_MS)
// or the ping would. Armed at pauses, not by a timer per stream a second: CAF's clock wakes a thread for each.
constexpr std::chrono::milliseconds end_probe_after{1000};

// recovering: the stream is over (stop, or a failure for good), and finals are still being fetched from a session's
// result (GET /v2/live/{id}); "stopped" waits for them.
enum class phase { initializing, connecting, open, waiting, recovering, finished };

using shared_chunk = std::shared_ptr<const std::string>;

// Audio not yet acknowledged by Gladia, as the whole chunks it is sent in (a drop on overflow takes whole chunks,
// so samples never shift). The first `sent` chunks went out on the current connection; the first `front_acked`
// bytes of the front chunk are acknowledged already (an ack that ends inside a chunk).
struct replay_buffer {
  // A chunk or two wait while Gladia acknowledges promptly: a ring that holds room for one (16 bytes) and grows and
  // shrinks with what waits, not a deque's map and block (200 bytes once used) for every relay. Unbounded here: the
  // relay's own limit (drop_to) bounds it.
  boost::circular_buffer_space_optimized<shared_chunk> chunks{
      boost::circular_buffer_space_optimized<shared_chunk>::capacity_type(
          std::numeric_limits<std::size_t>::max() / sizeof(shared_chunk), 1)};
  std::size_t bytes = 0;     // held, front_acked included
  std::uint64_t popped = 0;  // bytes gone from the front (acknowledged, or dropped): the stream's position of it
  std::size_t sent = 0;
  std::size_t front_acked = 0;
  std::size_t dropped_in_flight = 0;  // sent on this connection, dropped before Gladia acknowledged them

  bool all_sent() const { return sent == chunks.size(); }
  std::size_t unacked_sent_bytes() const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < sent; ++i) n += chunks[i]->size();
    return n - (sent ? front_acked : 0);
  }
  std::size_t unacked_bytes() const { return bytes - front_acked; }  // sent or not
  void push(shared_chunk c) {
    bytes += c->size();
    chunks.push_back(std::move(c));
  }
  // The stream's position (bytes from its start) of the first byte Gladia has not acknowledged: where the next
  // connection starts.
  std::uint64_t position() const { return popped + front_acked; }
  void pop_front() {
    bytes -= chunks.front()->size();
    popped += chunks.front()->size();
    chunks.pop_front();
    front_acked = 0;
  }
  // Gladia acknowledged `n` more bytes: they are the oldest it was sent on this connection.
  void acknowledge(std::size_t n) {
    auto skip = std::min(n, dropped_in_flight);
    dropped_in_flight -= skip;
    n -= skip;
    while (n > 0 && sent > 0) {
      auto left = chunks.front()->size() - front_acked;
      if (n < left) {
        front_acked += n;
        return;
      }
      n -= left;
      pop_front();
      --sent;
    }
  }
  // Drops whole chunks, oldest first, until at most `limit` bytes are held.
  struct dropped_bytes {
    std::size_t never_sent = 0;  // never reached the upstream: lost
    std::size_t unacked = 0;     // sent on this connection, not acknowledged yet: Gladia may have them
  };
  dropped_bytes trim_to(std::size_t limit) {
    dropped_bytes dropped;
    while (bytes > limit && !chunks.empty()) {
      auto n = chunks.front()->size() - front_acked;
      if (sent > 0) {  // Gladia may still acknowledge it: that ack is not for the chunk behind it
        --sent;
        dropped_in_flight += n;
        dropped.unacked += n;
      } else {
        dropped.never_sent += n;
      }
      pop_front();
    }
    return dropped;
  }
  // The connection is gone: everything not acknowledged goes again on the next one.
  void rewind() {
    sent = 0;
    dropped_in_flight = 0;
  }
};

// A stretch of the stream (seconds from its start) whose finals may have been lost: a connection lost with finals in
// flight (or an end without the rest) opens one from the end of the last final heard; the first final heard after it
// closes it at its start. `to` is infinite while it is open.
struct gap {
  double from, to;
  // `to` is where a session left (ended or lost) had its audio acknowledged: an utterance of it that begins before
  // counts, though its middle be later. The audio from there goes to the new session, but what began before would be
  // nobody's (Gladia may have taken audio whose acknowledgment never came: read before the connection's reset).
  bool session_left = false;
};

// A Gladia session whose finals may be missing: its result (GET /v2/live/{id}) has them, asked for until the deadline.
struct recovery {
  std::string session_id;
  std::string prefix;  // its utterance ids' prefix
  double offset = 0;   // where it began in the stream (s): its times are from there
  std::vector<gap> gaps;
  std::int64_t deadline_ms = 0;  // steady
  // Gladia's last answer that was not the result ("status processing", "HTTP 503"), for the log: a request cut short
  // by the deadline says less than the answers before it.
  std::string last_answer;
};

struct gladia_state {
  static inline const char* name = "gladia_relay";
  context_ptr ctx;
  std::shared_ptr<net::outbound> out;
  stt_listener_actor listener;
  phase ph = phase::initializing;
  std::string session_url;
  std::string session_id;
  // Gladia can end a session mid-stream (1000/1001: its 3-hour limit): the stream goes on in a new one. Each new
  // session's times start from 0 again and its utterance ids repeat: they are moved by `offset` (seconds of the
  // stream before its first byte, set when it first opens) and prefixed "s<n>-" from the second session on.
  int session_number = 1;
  std::string id_prefix;
  double offset = 0;
  bool offset_set = false;
  int short_sessions = 0;  // sessions in a row that Gladia ended within short_session_bytes of audio
  std::string stream;      // "<stream id> room=<slug>", for log lines
  replay_buffer replay;
  std::string partial;         // audio of the chunk being filled (less than chunk_bytes)
  std::uint64_t acked_to = 0;  // Gladia's running total of acknowledged bytes (byte_range[1] of the last ack)
  std::uint64_t generation = 0;
  std::shared_ptr<net::outbound_ws> ws;
  bool drain_armed = false;  // notify_when_drained is pending for this connection
  // Ack watchdog: since when the oldest unacknowledged chunk has waited (steady ms), and whether a check is armed.
  std::int64_t outstanding_since = 0;
  bool watchdog_armed = false;
  // The client's audio paused (or stopped): nothing new to send, so only the end probe (end_probe_after) would find
  // an unseen end of the connection. It is armed whenever audio goes out meanwhile (a replay after a reconnect too).
  bool paused = false;
  bool probe_armed = false;
  int attempts = 0;
  bool stop_requested = false;
  bool stop_sent = false;
  std::int64_t stop_sent_at = 0;  // steady ms
  bool stop_taken = false;  // Gladia acknowledged this connection's stop_recording: it has read all audio before it
  // The session whose drain bound (STT_DRAIN_TIMEOUT_MS from its first stop_recording) runs: a session that ends or is
  // lost after the stop leaves the rest of the stream to a new one, which gets a bound of its own.
  int drain_session = 0;
  // The session whose bound ran out while its connection was gone, with audio Gladia may not have: its bound starts
  // again with the stop on the next connection (or a new session gets its own), once.
  int drain_extended = 0;
  // Finals of the current session Gladia may have sent that never arrived (see gap). Gladia's own list of the
  // session's utterances (post_transcript, else GET /v2/live/{id}) then has them: an utterance whose middle lies
  // inside a gap is delivered.
  std::vector<gap> gaps;
  double last_final_end = -std::numeric_limits<double>::infinity();  // in the stream's time
  bool result_seen = false;  // post_transcript arrived: every final up to the end came before it
  // Sessions whose results are being fetched: an ended one's at once, the current one's after stop. "stopped" waits
  // for them (phase recovering).
  std::vector<recovery> recoveries;
  actor_probe probe;
  // gladia.relay_ms: from the server's read of the audio that completed an upstream chunk to that chunk's write,
  // the longest such wait when several chunks go at once (after a connect, a reconnect or a slow write).
  // `unsent_read_ns` is the read time of the oldest chunk not yet written (0: none waits, or its time is unknown).
  latency_recorder* relay_latency = nullptr;
  std::int64_t unsent_read_ns = 0;

  // However the relay ends (finished, its session gone, an exception), what it held leaves the gauge.
  ~gladia_state() {
    if (ctx) ctx->metrics->stt_buffered_bytes -= static_cast<std::int64_t>(replay.bytes + partial.size());
  }
};

using self_ptr = gladia_relay_actor::stateful_pointer<gladia_state>;

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::int64_t steady_ms() {
  return steady_ns() / 1'000'000;
}

// A stream position (bytes from its start) in seconds.
double seconds_of(std::uint64_t bytes) {
  return static_cast<double>(bytes) / static_cast<double>(bytes_per_second);
}

std::chrono::milliseconds backoff(int attempt) {  // 300 ms * 2^n, capped at 2 s
  return std::chrono::milliseconds(std::min<long>(2000, 300L << std::min(attempt, 10)));
}

// GLADIA_API_URL (without its trailing slashes) + `path`.
std::string api_url(const config::gladia_settings& g, const std::string& path) {
  std::string url = g.api_url;
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url + path;
}

// An answer of Gladia's REST API (or the network's failure), as the relay gets it.
upstream_init answer_of(net::http_outcome r) {
  upstream_init i;
  i.ok = r.ok;
  i.error = std::move(r.error);
  i.status = r.status;
  i.body = std::move(r.body);
  for (auto& [k, v] : r.headers)
    if (k == "retry-after") i.retry_after = v;
  return i;
}

void status(self_ptr self, const char* s) {
  self->send(self->state.listener, status_atom::value, stt_status{s, "gladia"});
}

void publish_held(gladia_state& st, std::int64_t delta) {
  st.ctx->metrics->stt_buffered_bytes += delta;
}

// Ends the relay: error (if any), then, once the results of sessions being fetched are in, "stopped", then exit.
void finish(self_ptr self, const std::string& code = {}, const std::string& message = {}) {
  auto& st = self->state;
  if (st.ph == phase::finished) return;
  if (!code.empty()) self->send(st.listener, error_atom::value, stt_error{code, message});
  if (st.ws) {
    st.ws->close(1000);
    st.ws.reset();
    ++st.generation;  // what that connection still reports is ignored
  }
  if (!st.recoveries.empty()) {  // on_result comes back here when the last is in
    st.ph = phase::recovering;
    return;
  }
  st.ph = phase::finished;
  status(self, "stopped");
  self->quit();
}

// Audio sent on this connection that Gladia has not acknowledged yet.
bool outstanding(const gladia_state& st) {
  return st.replay.sent > 0 || st.replay.dropped_in_flight > 0;
}

// What the connection still owes: acknowledgments of audio sent on it, or, after stop_recording, Gladia's end.
bool awaited(const gladia_state& st) {
  return outstanding(st) || st.stop_sent;
}

// When the connection last owed something without a word from Gladia: the oldest unacknowledged audio's wait (from the
// last acknowledgment), else the stop's.
std::int64_t awaited_since(const gladia_state& st) {
  return outstanding(st) ? st.outstanding_since : std::max(st.outstanding_since, st.stop_sent_at);
}

// The client's audio paused (or stopped), something awaited: the end probe looks a second later (end_probe_after).
void arm_end_probe(self_ptr self, std::chrono::milliseconds after = end_probe_after) {
  auto& st = self->state;
  if (st.probe_armed || !st.paused || st.ph != phase::open || !awaited(st)) return;
  st.probe_armed = true;
  self->delayed_send(self, after, quiet_atom::value, st.generation);
}

void arm_watchdog(self_ptr self) {
  auto& st = self->state;
  if (st.watchdog_armed) return;
  st.watchdog_armed = true;
  auto wait = st.ctx->cfg.stt_ack_timeout - std::chrono::milliseconds(steady_ms() - st.outstanding_since);
  self->delayed_send(self, std::max(wait, std::chrono::milliseconds(1)), tick_atom::value, st.generation);
}

// Finals may have been lost from here on (a connection went with what it carried, or the end never came).
void open_gap(self_ptr self) {
  auto& st = self->state;
  if (!st.gaps.empty() && std::isinf(st.gaps.back().to)) return;  // no final heard since the last one opened
  if (st.gaps.size() == max_gaps) {
    st.gaps.erase(st.gaps.begin());
    st.ctx->metrics->note("gladia.gaps_forgotten", "gladia: stream " + st.stream + ": more than " +
                                                       std::to_string(max_gaps) +
                                                       " connections lost; finals lost with the oldest will not be "
                                                       "looked for");
  }
  st.gaps.push_back({st.last_final_end, std::numeric_limits<double>::infinity()});
}

void heard_final(gladia_state& st, const stt_transcript& t) {
  // A final from before the gap (Gladia saying one again after the reconnect) leaves it open.
  if (!st.gaps.empty() && std::isinf(st.gaps.back().to) && (t.start + t.end) / 2 > st.gaps.back().from)
    st.gaps.back().to = t.start;
  st.last_final_end = std::max(st.last_final_end, t.end);
}

// Delivers a session's utterances that lie inside one of its gaps (their finals never arrived), as finals of their
// own ids. The utterances' times are the session's, from `offset` in the stream.
void fill_gaps(self_ptr self, const std::vector<stt_transcript>& utterances, const std::vector<gap>& gaps,
               double offset, const std::string& prefix, const char* from) {
  auto& st = self->state;
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < utterances.size(); ++i) {
    const double middle = offset + (utterances[i].start + utterances[i].end) / 2;
    for (auto& g : gaps) {
      if (!(g.from < middle && (g.session_left ? offset + utterances[i].start < g.to : middle < g.to))) continue;
      auto t = utterances[i];
      t.utterance_id = prefix + "recovered-" + std::to_string(i);
      t.start += offset;
      t.end += offset;
      self->send(st.listener, heard_atom::value, std::move(t));
      ++n;
      break;
    }
  }
  if (n == 0) return;
  st.ctx->metrics->note("gladia.recovered_finals",
                        "gladia: stream " + st.stream + ": " + std::to_string(n) +
                            " final(s) lost with a connection (or never sent at the session's end) recovered from " +
                            from,
                        n);
}

void fetch_result(self_ptr self, const recovery& r);

// The recovery of the session `id` under way, or end().
std::vector<recovery>::iterator recovery_of(gladia_state& st, const std::string& id) {
  return std::find_if(st.recoveries.begin(), st.recoveries.end(),
                      [&](const recovery& rec) { return rec.session_id == id; });
}

// After stop_recording: Gladia has all the stream's audio (it read the stop, which came after it, or acknowledged every
// byte). Not so when it ended the session at its limit before it read them: then an end is no end of the stream.
bool gladia_took_all(const gladia_state& st) {
  return st.stop_taken || st.replay.chunks.empty();
}

// The current session is over, or being left (it ended mid-stream, or was lost) with its acknowledged audio ending
// `upto` seconds into the stream as its own times count (see renew): finals still missing are fetched from its result,
// within STT_DRAIN_TIMEOUT_MS.
void set_aside(self_ptr self, double upto) {
  auto& st = self->state;
  if (st.gaps.empty()) return;
  auto gaps = std::move(st.gaps);
  st.gaps.clear();
  if (st.session_id.empty()) return;  // nowhere to ask
  if (std::isinf(gaps.back().to) && !std::isinf(upto)) {
    gaps.back().to = upto;
    gaps.back().session_left = true;
  }
  st.recoveries.push_back({st.session_id,
                           st.id_prefix,
                           st.offset,
                           std::move(gaps),
                           steady_ms() + st.ctx->cfg.stt_drain_timeout.count(),
                           {}});
  fetch_result(self, st.recoveries.back());
}

// The stream is over after stop (post_final_transcript, Gladia's close, or the drain bound): finals still missing
// are fetched from Gladia's result of the session first.
void end_after_stop(self_ptr self, bool tail_missing) {
  auto& st = self->state;
  if (tail_missing && !st.result_seen) open_gap(self);
  set_aside(self, std::numeric_limits<double>::infinity());
  finish(self);
}

void fetch_result(self_ptr self, const recovery& rec) {
  auto& st = self->state;
  st.ctx->metrics->count("gladia.result_fetches");
  const auto url = api_url(st.ctx->cfg.gladia, "/v2/live/" + net::percent_encode(rec.session_id));
  net::client_options o;
  o.ca_file = st.ctx->cfg.gladia.ca_file;
  o.timeout = std::chrono::milliseconds(std::max<std::int64_t>(1, rec.deadline_ms - steady_ms()));
  gladia_relay_actor me = self;
  st.out->fetch(url, "GET", {{"x-gladia-key", st.ctx->cfg.gladia.api_key}}, {}, o,
                [me, id = rec.session_id](net::http_outcome r) {
                  caf::anon_send(me, result_atom::value, id, answer_of(std::move(r)));
                });
}

// Gladia's answer to GET /v2/live/{id}: the missing finals, or (not ready yet) another try within the bound.
void on_result(self_ptr self, const std::string& id, const upstream_init& r) {
  auto& st = self->state;
  auto it = recovery_of(st, id);
  if (it == st.recoveries.end()) return;
  std::string problem;
  bool again = !r.ok || r.status == 408 || r.status == 429 || r.status >= 500;
  bool done = false;
  if (r.ok && r.status == 200) {
    auto result = parse_gladia_result(r.body);
    if (result.status == "done") {
      fill_gaps(self, result.utterances, it->gaps, it->offset, it->prefix, "the session's result (GET /v2/live/{id})");
      done = true;
    } else {
      again = result.status == "queued" || result.status == "processing";
      problem = result.status.empty() ? "an answer without a status" : "status " + result.status;
    }
  } else {
    problem = r.ok ? "HTTP " + std::to_string(r.status) : r.error;
  }
  if (!done) {
    const auto left = it->deadline_ms - steady_ms();
    if (again && left > 0) {
      if (r.ok) it->last_answer = problem;
      self->delayed_send(self, std::min(result_poll, std::chrono::milliseconds(left)), result_atom::value, id);
      return;
    }
    std::string until = again ? " until STT_DRAIN_TIMEOUT_MS ran out" : "";
    // The last request failed on the network as the bound ran out (its own timeout is what was left of it): Gladia's
    // answer before says more.
    if (!r.ok && again && !it->last_answer.empty()) {
      until += " (the last request: " + problem + ")";
      problem = it->last_answer;
    }
    st.ctx->metrics->count("gladia.recovery_failures");
    st.ctx->metrics->error("gladia.recovery_failures",
                           "gladia: stream " + st.stream +
                               ": finals that may be missing (lost with a connection, or not sent at the session's "
                               "end) could not be recovered: GET /v2/live/" +
                               id + " gave " + problem + until);
  }
  st.recoveries.erase(it);
  if (st.ph == phase::recovering && st.recoveries.empty()) finish(self);
}

// Sends the next chunks straight from the replay buffer, at most in_flight_bytes of them handed to the connection and
// not yet written (the connection writes what waits in one go: a backlog after a reconnect or on a busy server goes
// in a few writes, not one round trip through this actor per chunk); then stop_recording once everything is out
// after a stop.
void send_pending(self_ptr self) {
  auto& st = self->state;
  if (st.ph != phase::open) return;
  auto& r = st.replay;
  while (!r.all_sent()) {
    if (st.ws->backlog() >= in_flight_bytes) {  // enough is on its way: continue when it is written
      if (!st.drain_armed) {
        st.drain_armed = true;
        st.ws->notify_when_drained();
      }
      return;
    }
    if (r.sent == 0) st.outstanding_since = steady_ms();
    const auto& c = r.chunks[r.sent];
    if (r.sent == 0 && r.front_acked > 0) {  // an ack ended inside it: the rest only
      st.ws->send_binary(std::make_shared<const std::string>(c->substr(r.front_acked)));
    } else {
      st.ws->send_binary(c);
    }
    ++r.sent;
    arm_watchdog(self);
  }
  if (st.unsent_read_ns != 0) {  // everything is written: the audio that waited longest is on its way
    st.relay_latency->add(static_cast<double>(steady_ns() - st.unsent_read_ns) / 1e6);
    st.unsent_read_ns = 0;
  }
  if (st.stop_requested && !st.stop_sent && st.partial.empty()) {
    st.ws->send_text(R"({"type":"stop_recording"})");
    st.stop_sent = true;
    st.stop_sent_at = steady_ms();
    if (st.drain_session != st.session_number) {
      st.drain_session = st.session_number;
      self->delayed_send(self, st.ctx->cfg.stt_drain_timeout, timeout_atom::value, st.session_number);
    }
  }
  arm_end_probe(self);  // the client paused: nothing more goes out to find a connection that is gone
}

// Moves the partial chunk into the replay buffer (a short chunk), e.g. when the audio paused or stopped.
void seal_partial(gladia_state& st) {
  if (st.partial.empty()) return;
  st.replay.push(std::make_shared<const std::string>(std::move(st.partial)));
  st.partial = std::string();
}

void hold(self_ptr self, const audio_chunk& chunk) {
  auto& st = self->state;
  const auto* p = reinterpret_cast<const char*>(chunk.pcm.data());
  std::size_t left = chunk.pcm.size();
  const auto before = st.replay.bytes + st.partial.size();
  while (left > 0) {
    if (st.partial.empty() && left >= chunk_bytes) {  // a whole chunk: no copy through `partial`
      st.replay.push(std::make_shared<const std::string>(p, chunk_bytes));
      p += chunk_bytes;
      left -= chunk_bytes;
      continue;
    }
    auto n = std::min(left, chunk_bytes - st.partial.size());
    if (st.partial.capacity() < chunk_bytes) st.partial.reserve(chunk_bytes);
    st.partial.append(p, n);
    p += n;
    left -= n;
    if (st.partial.size() == chunk_bytes) seal_partial(st);
  }
  if (chunk.flush) seal_partial(st);
  auto limit = st.ctx->cfg.stt_replay_buffer_bytes;
  if (st.replay.bytes + st.partial.size() > limit) {  // never silently: counted and reported in /metrics
    auto dropped = st.replay.trim_to(limit > st.partial.size() ? limit - st.partial.size() : 0);
    st.ctx->metrics->count("gladia.dropped_bytes", dropped.never_sent);
    st.ctx->metrics->count("gladia.dropped_unacked_bytes", dropped.unacked);
    st.ctx->metrics->error("gladia.dropped_bytes", "gladia: replay buffer full (STT_REPLAY_BUFFER_BYTES), stream " +
                                                       st.stream + ": dropped " + std::to_string(dropped.never_sent) +
                                                       " bytes never sent and " + std::to_string(dropped.unacked) +
                                                       " bytes sent but not acknowledged");
  }
  publish_held(st, static_cast<std::int64_t>(st.replay.bytes + st.partial.size()) - static_cast<std::int64_t>(before));
}

void connect(self_ptr self) {
  auto& st = self->state;
  st.ph = phase::connecting;
  auto gen = ++st.generation;
  gladia_relay_actor me = self;
  net::ws_events ev;
  ev.opened = [me, gen] { caf::anon_send(me, upstream_atom::value, upstream_event{gen, "open", {}, 0}); };
  ev.text = [me, gen](std::string t) {
    caf::anon_send(me, upstream_atom::value, upstream_event{gen, "text", std::move(t), 0});
  };
  ev.closed = [me, gen](std::uint16_t code, std::string reason) {
    caf::anon_send(me, upstream_atom::value, upstream_event{gen, "closed", std::move(reason), code});
  };
  ev.drained = [me, gen] { caf::anon_send(me, upstream_atom::value, upstream_event{gen, "drained", {}, 0}); };
  st.drain_armed = false;
  net::client_options o;
  o.ca_file = st.ctx->cfg.gladia.ca_file;
  o.timeout = std::chrono::milliseconds(10'000);  // connect, handshake, and each write
  o.ping_interval = st.ctx->cfg.ws_ping_interval;
  st.ws = st.out->connect_ws(st.session_url, o, std::move(ev));
}

void start_init(self_ptr self) {
  auto& st = self->state;
  st.ph = phase::initializing;
  const auto& g = st.ctx->cfg.gladia;
  auto url = api_url(g, "/v2/live");
  if (!g.region.empty()) url += "?region=" + net::percent_encode(g.region);
  gladia_relay_actor me = self;
  net::client_options o;
  o.ca_file = g.ca_file;
  o.timeout = std::chrono::milliseconds(10'000);
  st.out->fetch(url, "POST", {{"x-gladia-key", g.api_key}, {"Content-Type", "application/json"}}, gladia_init_body(g),
                o, [me](net::http_outcome r) { caf::anon_send(me, init_atom::value, answer_of(std::move(r))); });
}

void on_init(self_ptr self, upstream_init& r) {
  auto& st = self->state;
  if (st.ph != phase::initializing) return;
  auto& m = *st.ctx->metrics;
  if (r.ok && r.status == 201) {
    rapidjson::Document d;
    const bool has_url = parse_json(d, r.body) && d.IsObject() && d.HasMember("url") && d["url"].IsString();
    // A url that is no ws(s) url is not connected to (nor retried: it would only open more sessions), nor shown:
    // it carries the session's token.
    const auto u = has_url ? net::parse_url(d["url"].GetString()) : std::nullopt;
    if (u && (u->scheme == "ws" || u->scheme == "wss")) {
      st.session_url = d["url"].GetString();
      if (d.HasMember("id") && d["id"].IsString()) st.session_id = d["id"].GetString();
      st.attempts = 0;
      connect(self);
      return;
    }
    m.count("gladia.init_failures.bad_response");
    finish(self, "stt_unavailable",
           has_url ? "Gladia answered 201 with a session url that is no ws(s) url"
                   : "Gladia answered 201 without a session url");
    return;
  }
  std::string label = r.ok ? std::to_string(r.status) : "network";
  m.count("gladia.init_failures." + label);
  bool retryable = !r.ok || r.status == 408 || r.status == 429 || r.status >= 500;
  std::string message = r.ok ? "Gladia init failed with HTTP " + std::to_string(r.status) : r.error;
  std::string request_id;  // Gladia's support asks for it; the log has it, the client does not
  if (r.ok) {
    rapidjson::Document d;
    if (parse_json(d, r.body) && d.IsObject()) {
      if (d.HasMember("message") && d["message"].IsString())
        message += ": " + excerpt({d["message"].GetString(), d["message"].GetStringLength()});
      if (d.HasMember("request_id") && d["request_id"].IsString())
        request_id =
            " (request_id " + excerpt({d["request_id"].GetString(), d["request_id"].GetStringLength()}, 64) + ")";
    }
  }
  // One line a second however many streams fail (an outage fails them all), with the number left out.
  m.error("gladia.init_failures", "gladia: stream " + st.stream + ": " + message + request_id);
  if (!retryable || ++st.attempts >= max_attempts) {
    finish(self, r.ok && r.status == 401 ? "stt_auth_failed" : "stt_unavailable", message);
    return;
  }
  auto delay = backoff(st.attempts - 1);
  if (!r.retry_after.empty()) {
    char* end = nullptr;
    double secs = std::strtod(r.retry_after.c_str(), &end);
    if (end && !*end && secs >= 0 && secs <= 60) delay = std::chrono::milliseconds(static_cast<long>(secs * 1000));
  }
  st.ph = phase::waiting;
  self->delayed_send(self, delay, retry_atom::value);
}

void on_text(self_ptr self, const std::string& text) {
  auto& st = self->state;
  auto m = parse_gladia_message(text);
  using kind = gladia_message::kind;
  switch (m.what) {
    case kind::unparsable:
      st.ctx->metrics->note("gladia.unparsable_messages",
                            "gladia: stream " + st.stream + ": a message that is not a JSON object with a type");
      return;
    case kind::transcript:
      m.transcript.start += st.offset;
      m.transcript.end += st.offset;
      if (!st.id_prefix.empty()) m.transcript.utterance_id.insert(0, st.id_prefix);
      if (m.transcript.is_final) heard_final(st, m.transcript);
      self->send(st.listener, heard_atom::value, std::move(m.transcript));
      return;
    case kind::ack: {
      // byte_range[1] is Gladia's exclusive running total, as its own SDK reads it. The bytes acknowledged are
      // counted from byte_range[0] when that is ahead of the last ack: Gladia counted audio whose ack was lost
      // with a connection, and that audio may since have been dropped here.
      const double end = m.ack_end;
      if (!(end > static_cast<double>(st.acked_to)) || end > 1e15) return;  // old, repeated or absurd
      auto from = st.acked_to;
      if (m.ack_start > static_cast<double>(from) && m.ack_start < end) from = static_cast<std::uint64_t>(m.ack_start);
      const auto before = st.replay.bytes;
      st.replay.acknowledge(static_cast<std::size_t>(static_cast<std::uint64_t>(end) - from));
      st.acked_to = static_cast<std::uint64_t>(end);
      publish_held(st, static_cast<std::int64_t>(st.replay.bytes) - static_cast<std::int64_t>(before));
      st.outstanding_since = steady_ms();  // progress: the watchdog counts from here
      return;
    }
    case kind::post_transcript:
      fill_gaps(self, m.utterances, st.gaps, st.offset, st.id_prefix, "post_transcript");
      st.gaps.clear();
      st.result_seen = true;
      return;
    case kind::stop_ack:
      if (m.acknowledged) st.stop_taken = true;
      return;
    case kind::post_final:  // every final of the session came before it
      if (st.stop_sent && gladia_took_all(st)) end_after_stop(self, false);
      return;
    case kind::known:
      return;
    case kind::unknown:
      st.ctx->metrics->note("gladia.unknown_messages",
                            "gladia: stream " + st.stream + ": unknown message type " + m.type + " (ignored)");
      return;
  }
}

// Bytes of audio as seconds, to the tenth ("10800.0").
std::string seconds(std::uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", seconds_of(bytes));
  return buf;
}

// The stream's session is over before stop: Gladia ended it (1000/1001: its 3-hour limit, or it went away), or it
// was lost (no connection to its url got through in max_attempts retries: the host that ran it went away). The stream
// goes on in a new session, the audio the old one did not acknowledge first. Finals of the old one lost with it come
// from its result. `what` says what happened, for the log; `metric` counts it.
void renew(self_ptr self, const std::string& what, const char* metric) {
  auto& st = self->state;
  st.short_sessions = st.acked_to < short_session_bytes ? st.short_sessions + 1 : 0;
  if (!st.result_seen && st.offset_set) open_gap(self);
  // The end of what it acknowledged, as its times count: by Gladia's own running total, which holds any audio it got
  // twice (taken before a drop that lost its ack, then replayed), not by the stream's position, which is behind by
  // that much. Its utterances beyond that come from audio the new session gets again.
  set_aside(self, st.offset + seconds_of(st.acked_to));
  if (st.short_sessions >= max_attempts) {
    finish(self, "stt_unavailable",
           "Gladia ended or lost " + std::to_string(st.short_sessions) +
               " sessions in a row, each within a minute of audio (the last: " + what + ")");
    return;
  }
  st.ctx->metrics->note(metric, "gladia: stream " + st.stream + ": " + what + "; going on in a new session");
  ++st.session_number;
  st.id_prefix = "s" + std::to_string(st.session_number) + "-";
  st.session_url.clear();
  st.session_id.clear();
  st.offset_set = false;
  st.acked_to = 0;  // the new session counts from 0
  st.result_seen = false;
  st.attempts = 0;
  status(self, "connecting");
  if (st.short_sessions < 2) {  // a session at its limit, or one going away: the next at once
    start_init(self);
    return;
  }
  st.ph = phase::waiting;  // sessions ending one after another: the same backoff as a failed init's
  self->delayed_send(self, backoff(st.short_sessions - 2), retry_atom::value);
}

void on_closed(self_ptr self, std::uint16_t code, const std::string& reason) {
  auto& st = self->state;
  st.ws.reset();
  if (st.ph == phase::finished || st.ph == phase::recovering) return;
  if (auto again = st.replay.unacked_sent_bytes()) st.ctx->metrics->count("gladia.replayed_bytes", again);
  st.replay.rewind();  // what Gladia did not acknowledge goes again on the next connection
  // After stop_recording: the end (without post_final_transcript the last finals may not have come). Unless Gladia
  // ended the session before it read the stop (its limit came with the last audio): audio it did not take is left,
  // and goes to a new session, with the stop.
  if ((code == 1000 || code == 1001) && st.stop_sent && gladia_took_all(st)) {
    end_after_stop(self, true);
    return;
  }
  if (code == 1000 || code == 1001) {
    renew(self,
          "Gladia ended session " + st.session_id + " (" + std::to_string(code) + (reason.empty() ? "" : " " + reason) +
              ") after " + seconds(st.acked_to) + " s of audio",
          "gladia.sessions_renewed");
    return;
  }
  if (code >= 4400 && code <= 4499) {
    st.ctx->metrics->note("gladia.closed_" + std::to_string(code),
                          "gladia: stream " + st.stream + ": closed " + std::to_string(code) + " " + reason);
    finish(self, code == 4401 || code == 4403 ? "stt_auth_failed" : "stt_unavailable",
           "Gladia closed the stream with " + std::to_string(code) + (reason.empty() ? "" : ": " + reason));
    return;
  }
  // Retryable: 1002-4399, 4500-9999, network errors (1006). Finals in flight went with the connection.
  if (st.ph == phase::open) {
    st.attempts = 0;  // a new drop
    open_gap(self);
  }
  if (++st.attempts > max_attempts) {
    renew(self,
          "no connection to session " + st.session_id + " got through (" + std::to_string(max_attempts) +
              " retries, the last: " + (reason.empty() ? std::to_string(code) : reason) + ") after " +
              seconds(st.acked_to) + " s of audio",
          "gladia.sessions_lost");
    return;
  }
  st.ctx->metrics->note("gladia.reconnects", "gladia: stream " + st.stream + ": reconnecting after " +
                                                 std::to_string(code) + (reason.empty() ? "" : " " + reason));
  st.ph = phase::waiting;
  status(self, "connecting");
  self->delayed_send(self, backoff(st.attempts - 1), connect_atom::value, st.generation);
}

}  // namespace

std::string gladia_init_body(const config::gladia_settings& g) {
  json_builder b;
  b.str("encoding", "wav/pcm").num("bit_depth", 16).num("sample_rate", 16000).num("channels", 1).str("model", g.model);
  b.dbl("endpointing", g.endpointing).dbl("maximum_duration_without_endpointing", g.max_duration_without_endpointing);
  // language_config: languages as a JSON array is built by hand (the builder only makes objects)
  std::string langs = "[";
  for (std::size_t i = 0; i < g.languages.size(); ++i) langs += (i ? ",\"" : "\"") + g.languages[i] + "\"";
  langs += "]";
  b.open("messages_config")
      .boolean("receive_partial_transcripts", true)
      .boolean("receive_final_transcripts", true)
      .boolean("receive_speech_events", true)
      .boolean("receive_acknowledgments", true)
      .boolean("receive_errors", true)
      .boolean("receive_post_processing_events", true)  // post_transcript: every utterance, for lost finals
      .boolean("receive_lifecycle_events", false)
      .close();
  auto body = b.done();
  body.pop_back();  // reopen the object to add the array-valued member
  body += ",\"language_config\":{\"languages\":" + langs +
          ",\"code_switching\":" + (g.languages.size() == 1 ? "false" : "true") + "}}";
  return body;
}

gladia_relay_actor::behavior_type gladia_relay(self_ptr self, context_ptr ctx, std::shared_ptr<net::outbound> out,
                                               stream_identity who, stt_listener_actor listener);

stt_provider gladia_provider(context_ptr ctx, std::shared_ptr<net::outbound> out) {
  auto p = make_provider(
      "gladia", ctx, [out](caf::actor_system& sys, context_ptr c, const stream_identity& who, stt_listener_actor l) {
        return stt_relay_actor{sys.spawn(gladia_relay, c, out, who, l)};
      });
  p.batch_bytes = chunk_bytes;
  return p;
}

// Spawned with arguments on purpose: CAF 0.17 dereferences a null argument tuple for argument-less function
// actors (UBSan reports it).
gladia_relay_actor::behavior_type gladia_relay(self_ptr self, context_ptr ctx, std::shared_ptr<net::outbound> out,
                                               stream_identity who, stt_listener_actor listener) {
  auto& st = self->state;
  st.ctx = ctx;
  st.out = out;
  st.listener = listener;
  st.stream = who.stream_id ? std::to_string(who.stream_id) + " room=" + who.session_slug : "?";
  st.probe = actor_probe(ctx->metrics, "gladia_relay");
  st.relay_latency = &ctx->metrics->latency("gladia.relay_ms");
  self->monitor(listener);
  self->set_down_handler([self](caf::down_msg&) {
    // The session is gone: nobody is left to deliver to.
    if (self->state.ws) self->state.ws->abort();
    self->quit();
  });
  start_init(self);
  using scope = probe_scope<std::remove_pointer_t<self_ptr>>;
  return {
      [self](audio_atom, audio_chunk& chunk) {
        scope t(self->state.probe, self);
        auto& s = self->state;
        if (s.stop_requested || s.ph == phase::finished || s.ph == phase::recovering) return;
        if (!chunk.pcm.empty()) s.paused = false;
        if (chunk.flush) s.paused = true;
        hold(self, chunk);
        // A chunk completed by this audio (a flush's short chunk is timed by the pause, not the server: left out).
        if (s.unsent_read_ns == 0 && chunk.read_ns != 0 && !chunk.flush && !s.replay.all_sent())
          s.unsent_read_ns = chunk.read_ns;
        send_pending(self);
      },
      [self](stop_atom) {
        scope t(self->state.probe, self);
        auto& s = self->state;
        if (s.stop_requested) return;
        s.stop_requested = true;
        s.paused = true;
        seal_partial(s);
        send_pending(self);  // sends the tail and stop_recording once open
      },
      [self](init_atom, upstream_init& r) {
        scope t(self->state.probe, self);
        on_init(self, r);
      },
      [self](upstream_atom, upstream_event& e) {
        scope t(self->state.probe, self);
        auto& s = self->state;
        if (e.generation != s.generation) return;  // an old connection
        if (e.kind == "open") {
          s.ph = phase::open;
          if (!s.offset_set) {  // a session's first connection: its time 0 is the first byte it gets
            s.offset = seconds_of(s.replay.position());
            s.offset_set = true;
          }
          s.replay.rewind();  // replay everything not acknowledged, first
          s.stop_sent = false;
          s.stop_taken = false;
          s.watchdog_armed = false;  // a check armed for an earlier connection is ignored
          s.probe_armed = false;
          status(self, "ready");
          send_pending(self);
        } else if (e.kind == "drained") {
          s.drain_armed = false;
          send_pending(self);
        } else if (e.kind == "text") {
          on_text(self, e.data);
          send_pending(self);
        } else {
          on_closed(self, e.code, e.data);
        }
      },
      [self](tick_atom, std::uint64_t gen) {
        // The ack watchdog: audio sent on this connection and nothing acknowledged for STT_ACK_TIMEOUT_MS means
        // a connection that no longer works (a stalled upstream keeps the socket open): reconnect and replay.
        scope t(self->state.probe, self);
        auto& s = self->state;
        if (gen != s.generation || s.ph != phase::open) return;
        s.watchdog_armed = false;
        if (!outstanding(s)) return;
        if (steady_ms() - s.outstanding_since < s.ctx->cfg.stt_ack_timeout.count()) {
          arm_watchdog(self);
          return;
        }
        s.ctx->metrics->count("gladia.ack_timeouts");
        s.ctx->metrics->error("gladia.ack_timeouts", "gladia: stream " + s.stream + ": nothing acknowledged for " +
                                                         std::to_string(s.ctx->cfg.stt_ack_timeout.count()) +
                                                         " ms; reconnecting");
        // Dropped here and now, not when the I/O threads report the abort: audio arriving in between would send on
        // the dropped connection and arm the watchdog again, and a busy server counted the same timeout twice.
        // What the aborted connection still reports belongs to an old generation and is ignored.
        if (s.ws) s.ws->abort();
        ++s.generation;
        on_closed(self, 1006, "no acknowledgment");  // reconnect with backoff, then replay
      },
      [self](quiet_atom, std::uint64_t gen) {
        // The end probe, a second after a pause of the client's audio (or its stop): audio still outstanding and
        // nothing acknowledged for a second, or Gladia's end awaited a second after the stop, and no audio since ->
        // ask the connection whether Gladia ended it unseen.
        scope t(self->state.probe, self);
        auto& s = self->state;
        s.probe_armed = false;
        // Audio again: its writes find a connection that is gone.
        if (gen != s.generation || !s.paused || s.ph != phase::open || !awaited(s)) return;
        const auto waited = std::chrono::milliseconds(steady_ms() - awaited_since(s));
        if (waited >= end_probe_after) {
          s.ws->probe_end();
        } else {  // acknowledged within the second: look again a second after that
          arm_end_probe(self, end_probe_after - waited);
        }
      },
      [self](connect_atom, std::uint64_t gen) {
        scope t(self->state.probe, self);
        if (gen == self->state.generation && self->state.ph == phase::waiting) connect(self);
      },
      [self](retry_atom) {
        scope t(self->state.probe, self);
        if (self->state.ph == phase::waiting && self->state.session_url.empty()) start_init(self);
      },
      [self](result_atom, const std::string& id, upstream_init& r) {
        scope t(self->state.probe, self);
        on_result(self, id, r);
      },
      [self](result_atom, const std::string& id) {
        scope t(self->state.probe, self);
        auto it = recovery_of(self->state, id);
        if (it != self->state.recoveries.end()) fetch_result(self, *it);
      },
      [self](timeout_atom, int session) {
        scope t(self->state.probe, self);
        auto& s = self->state;
        if (session != s.session_number || s.ph == phase::finished || s.ph == phase::recovering) return;
        // The connection went after the stop, with audio Gladia may not have (it acknowledged neither that audio nor
        // the stop), and the reconnects are under way: ending here would leave that audio untranscribed. They go on
        // (bounded: max_attempts); the stop on the next connection starts the bound again, or a new session (this
        // one lost) gets its own. Once a session: a second time, the stream ends wherever it is.
        if (s.ph != phase::open && !gladia_took_all(s) && s.drain_extended != s.session_number) {
          s.drain_extended = s.session_number;
          s.drain_session = 0;
          s.ctx->metrics->note("gladia.drain_extended",
                               "gladia: stream " + s.stream +
                                   ": STT_DRAIN_TIMEOUT_MS ran out while reconnecting, with audio not acknowledged; "
                                   "the bound starts again with the stop on the next connection");
          return;
        }
        // Audio Gladia acknowledged neither by itself nor by reading the stop after it: unless its result has it (an
        // acknowledgment lost in flight), it goes untranscribed. Counted, and said.
        const auto unacked = gladia_took_all(s) ? 0 : s.replay.unacked_bytes();
        if (unacked > 0) s.ctx->metrics->count("gladia.unacknowledged_end_bytes", unacked);
        s.ctx->metrics->note("gladia.drain_timeouts",
                             "gladia: stream " + s.stream +
                                 ": no end from Gladia within STT_DRAIN_TIMEOUT_MS after stop" +
                                 (unacked > 0 ? "; its last " + std::to_string(unacked / 32) +
                                                    " ms of audio were never acknowledged (untranscribed unless the "
                                                    "session's result has them)"
                                              : ""));
        end_after_stop(self, true);
      },
  };
}

}  // namespace sw
