#include "net/server.hpp"

#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <boost/asio/ip/network_v4.hpp>
#include <boost/asio/ip/network_v6.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/container/vector.hpp>
#include <caf/send.hpp>

#include "net/beast_util.hpp"
#include "net/client_layer.hpp"
#include "net/drain_executor.hpp"
#include "net/edge_socket.hpp"
#include "net/http_codec.hpp"
#include "net/runtime.hpp"
#include "net/server_websocket.hpp"
#include "net/tls_stream.hpp"
#include "net/url.hpp"
#include "net/ws_writer.hpp"
#include "proto/ws_frame.hpp"

namespace sw::net {

using clock = std::chrono::steady_clock;

namespace {

// A proxy's network (TRUSTED_PROXIES entry): an address and how many leading bits must match.
struct trusted_network {
  asio::ip::address address;
  unsigned bits = 0;
  // `a` is inside when its network of the same prefix length is this one.
  bool contains(asio::ip::address a) const {
    if (a.is_v6() && a.to_v6().is_v4_mapped()) a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
    if (a.is_v4() != address.is_v4()) return false;
    if (a.is_v4())
      return asio::ip::make_network_v4(a.to_v4(), bits).canonical() ==
             asio::ip::make_network_v4(address.to_v4(), bits).canonical();
    return asio::ip::make_network_v6(a.to_v6(), bits).canonical() ==
           asio::ip::make_network_v6(address.to_v6(), bits).canonical();
  }
};

std::vector<trusted_network> parse_trusted(const std::vector<std::string>& entries) {
  std::vector<trusted_network> out;
  for (const auto& e : entries) {
    auto slash = e.find('/');
    boost::system::error_code ec;
    auto a = asio::ip::make_address(e.substr(0, slash), ec);
    if (ec) continue;  // config/ refused it already
    unsigned full = a.is_v4() ? 32 : 128;
    out.push_back({a, slash == std::string::npos ? full : static_cast<unsigned>(std::stoul(e.substr(slash + 1)))});
  }
  return out;
}

inline std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(clock::now().time_since_epoch()).count();
}

// What the pause watch tells a connection (called from the watch's timer, on any I/O thread): its audio paused, or
// nothing more came for the quiet interval after bytes that were no audio (a text message, a control frame, part of a
// frame), where no audio pause will come to look for an end that came with them.
class quiet_target {
public:
  virtual void audio_paused() = 0;
  virtual void reads_paused() = 0;

protected:
  ~quiet_target() = default;
};

// A connection's entry in the pause watch. The connection writes it on every binary frame (two relaxed stores), and
// after a read that took no audio (two more); the watch reads it.
struct quiet_slot {
  std::atomic<std::int64_t> last_audio_ns{0};  // steady clock
  std::atomic<bool> pending{false};            // audio came since the session last heard of a pause
  std::atomic<bool> held{false};               // a chunk may wait in the kernel (client_layer.hpp): see quiet_watch
  std::atomic<std::int64_t> last_other_ns{0};  // steady clock: the last read that took bytes but no audio
  std::atomic<bool> other_pending{false};      // such a read came since the connection last looked for its end
  std::weak_ptr<quiet_target> owner;
  std::size_t index = 0;  // in the watch's list
};

// One timer for every connection's pause detection (audio_quiet) instead of one per connection: a per-connection
// timer fires every interval while audio flows (one timer job per connection per 100 ms, about a fifth of the
// frames' own cost at 20 ms frames), where the watch looks at every connection's last frame once per quarter
// interval and wakes only the ones that paused. A pause is reported between one and one and a quarter intervals
// after the last frame. The timer runs only while some connection is watched.
//
// A connection that holds its chunk in the kernel is read once a chunk, so its last read is up to a chunk old while
// audio flows, and with the default chunk (100 ms) and interval (100 ms) the next read is due just when the interval
// ends: a little jitter would release every few dozen chunks early, flushing a part-chunk upstream for nothing. So a
// held connection gets a quarter interval more: its pause is reported one and a quarter to one and a half intervals
// after its last read (which was no later than its last frame's arrival).
//
// Without a provider that waits for pauses (audio_quiet 0) the watch still runs, at end_probe_interval, only to look
// for a client's end at each pause (ws_session::probe_end).
constexpr std::chrono::milliseconds end_probe_interval{500};

class quiet_watch : public std::enable_shared_from_this<quiet_watch> {
public:
  quiet_watch(asio::io_context& io, std::chrono::milliseconds quiet)
      : quiet_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(quiet).count()),
        tick_(std::max<clock::duration>(quiet / 4, std::chrono::milliseconds(1))),
        timer_(io) {}

  // A pause: this long without a frame (the held connections' quarter more aside).
  std::int64_t interval_ns() const { return quiet_ns_; }

  void add(quiet_slot& s) {
    std::lock_guard<std::mutex> lock(mu_);
    s.index = slots_.size();
    slots_.push_back(&s);
    if (!armed_) {
      armed_ = true;
      arm();
    }
  }

  void remove(quiet_slot& s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (s.index >= slots_.size() || slots_[s.index] != &s) return;
    slots_[s.index] = slots_.back();
    slots_[s.index]->index = s.index;
    slots_.pop_back();
  }

private:
  void arm() {
    timer_.expires_after(tick_);
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (!ec) self->sweep();
    });
  }

  void sweep() {
    const auto now = steady_ns();
    std::vector<std::weak_ptr<quiet_target>> paused, idle;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto* s : slots_) {
        if (s->pending.load(std::memory_order_relaxed)) {
          const auto quiet = quiet_ns_ + (s->held.load(std::memory_order_relaxed) ? quiet_ns_ / 4 : 0);
          if (now - s->last_audio_ns.load(std::memory_order_relaxed) >= quiet) {
            s->pending.store(false, std::memory_order_relaxed);
            s->other_pending.store(false, std::memory_order_relaxed);  // the audio pause looks for the end too
            paused.push_back(s->owner);
            continue;
          }
        }
        if (s->other_pending.load(std::memory_order_relaxed) &&
            now - s->last_other_ns.load(std::memory_order_relaxed) >= quiet_ns_) {
          s->other_pending.store(false, std::memory_order_relaxed);
          idle.push_back(s->owner);
        }
      }
      armed_ = !slots_.empty();
      if (armed_) arm();
    }
    for (auto& w : paused)
      if (auto t = w.lock()) t->audio_paused();
    for (auto& w : idle)
      if (auto t = w.lock()) t->reads_paused();
  }

  const std::int64_t quiet_ns_;
  const clock::duration tick_;
  asio::steady_timer timer_;
  std::mutex mu_;
  std::vector<quiet_slot*> slots_;
  bool armed_ = false;
};

// Everything a connection needs from its server; connections keep it alive.
struct shared_state {
  server_options opts;
  gateway_actor handler;
  std::shared_ptr<net_stats> stats;
  // The TLS settings and certificate new connections get (none: no TLS); replaced whole by server::reload_tls. A
  // connection's SSL object holds its own reference to the OpenSSL context it began with.
  std::shared_ptr<ssl::context> tls_current() const {
    std::lock_guard<std::mutex> lock(tls_mu);
    return tls;
  }
  std::shared_ptr<ssl::context> tls;
  mutable std::mutex tls_mu;
  std::vector<trusted_network> trusted;  // opts.trusted_proxies, parsed
  // Every open WebSocket's pauses: at opts.audio_quiet for a provider that waits for them, else at end_probe_interval
  // only to find a client's end.
  std::shared_ptr<quiet_watch> quiet;
};

// How logs name the client of a request: its socket's peer, or, when that peer is a trusted proxy, the address at
// the end of X-Forwarded-For (what that proxy appended) and the proxy.
std::string client_of(const shared_state& st, const tcp::endpoint& peer, const http_request& req) {
  std::string label = peer.address().to_string() + ":" + std::to_string(peer.port());
  if (st.trusted.empty()) return label;
  const bool trusted = std::any_of(st.trusted.begin(), st.trusted.end(),
                                   [&](const trusted_network& n) { return n.contains(peer.address()); });
  const std::string* xff = req.header("x-forwarded-for");
  if (!trusted || !xff) return label;
  const auto comma = xff->rfind(',');
  std::string last = xff->substr(comma == std::string::npos ? 0 : comma + 1);
  last.erase(0, last.find_first_not_of(" \t"));
  last.erase(last.find_last_not_of(" \t") + 1);
  boost::system::error_code ec;
  asio::ip::make_address(last, ec);
  if (ec) return label;  // not an address: nothing a log should repeat
  return last + " via " + label;
}

// Counts one open TCP connection for as long as it lives (moved from HTTP to WebSocket).
struct connection_token {
  std::shared_ptr<net_stats> stats;
  explicit connection_token(std::shared_ptr<net_stats> s) : stats(std::move(s)) { ++stats->connections; }
  ~connection_token() { --stats->connections; }
  connection_token(const connection_token&) = delete;
  connection_token& operator=(const connection_token&) = delete;
};
using token_ptr = std::shared_ptr<connection_token>;

void note(const shared_state& st, const char* kind, const std::string& line) {
  if (st.stats->log) st.stats->log(kind, line);
}

template <class Stream>
std::string peer_of(Stream& s) {
  beast::error_code ec;
  auto ep = raw_socket(beast::get_lowest_layer(s)).remote_endpoint(ec);
  return ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port());
}

// A peer that stopped reading leaves our write stuck in its socket's full send buffer, and a close frame queued
// behind it would never leave: the peer, reading later, would find its stream cut without a reason. So the send
// buffer is widened by what the write has left (at most its frame, with the kernel's per-packet overhead) plus the
// close frame; it goes out behind the write and waits in the kernel for the peer. Within net.core.wmem_max, or
// above it where the process may (SO_SNDBUFFORCE); never smaller than it is.
void make_room_to_close(tcp::socket& s, std::size_t in_flight) {
  const int fd = s.native_handle();
  int current = 0;
  socklen_t len = sizeof current;
  if (::getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &current, &len) != 0) return;
  const std::size_t wanted = static_cast<std::size_t>(current) + 2 * (in_flight + 4096);
  if (wanted > static_cast<std::size_t>(INT_MAX)) return;
  const int request = static_cast<int>(wanted / 2 + 1);  // the kernel doubles what it is asked for
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &request, sizeof request) == 0) return;
  static const long wmem_max = [] {
    long v = 0;
    if (FILE* f = std::fopen("/proc/sys/net/core/wmem_max", "r")) {
      if (std::fscanf(f, "%ld", &v) != 1) v = 0;
      std::fclose(f);
    }
    return v;
  }();
  if (request <= wmem_max) ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &request, sizeof request);
}

// A TLS connection on the server's port: OpenSSL over the bare socket (net/tls_stream.hpp), from the handshake on.
// Asio's ssl::stream held about 70 KiB of buffers for the life of every connection; this holds its SSL object and
// little else between records. Its HTTP requests are timed by the session (http_session::expire_after).
using server_tls = edge_tls_stream;

// What a WebSocket runs on after the upgrade: a plain connection's bare socket (the WebSocket keeps its own timeouts,
// so Beast's timed stream would only add a timer check to every read and write), read to epoll's edge (one `recvmsg`
// a frame, not two: edge_socket.hpp); a TLS connection its stream, as it is.
template <class Stream>
struct ws_transport {
  using type = Stream;
  static type make(Stream&& s) { return std::move(s); }
};
template <>
struct ws_transport<plain_stream> {
  using type = edge_socket;
  static type make(plain_stream&& s) { return edge_socket(s.release_socket()); }
};

template <class Stream>
class ws_session;

// One WebSocket connection: RFC 6455 framing of our own (server_websocket.hpp, proto/ws_frame.hpp), a strictly
// single-writer bounded queue (ws_writer), server pings, heartbeat timeout, the closing handshake.
template <class Stream>
class ws_session final : public std::enable_shared_from_this<ws_session<Stream>>, public quiet_target {
public:
  ws_session(std::shared_ptr<shared_state> st, Stream&& stream, token_ptr token, std::string client, bool batch_audio)
      : st_(std::move(st)),
        token_(std::move(token)),
        client_(std::move(client)),
        ws_(ws_transport<Stream>::make(std::move(stream))),
        writer_(ws_, [this](beast::error_code ec, const ws_frame& f) { on_written(ec, f); }),
        reader_(st_->opts.ws_max_message),
        batch_bytes_(batch_audio ? st_->opts.audio_batch_bytes : 0),
        read_room_(batch_bytes_ > 0 ? batch_bytes_ + min_read_room : 8192),
        ping_timer_(ws_.get_executor()),
        close_timer_(ws_.get_executor()),
        drain_(ws_.get_executor(), this) {}

  ~ws_session() {
    st_->quiet->remove(quiet_);
    st_->stats->read_buffer_bytes -= static_cast<std::int64_t>(rx_.capacity());
    if (opened_ && !finished_)
      caf::anon_send(session_, closed_atom::value, peer_closed_);  // never a session left waiting
  }

  // From the pause watch: on the connection's own executor, the session hears of the pause (once per pause). While a
  // chunk is held in the kernel (client_layer.hpp), "no audio" means no read for the quiet interval: the frames of the
  // chunk may be waiting unread, so they are read first and the pause is taken once they have been. Either way no
  // frame waits longer than one and a half intervals after it came (quiet_watch), since none came before the last read.
  void audio_paused() override {
    asio::post(ws_.get_executor(), [self = this->shared_from_this()] {
      if (self->finished_) return;
      const auto since = steady_ns() - self->quiet_.last_audio_ns.load();
      if (since < self->st_->quiet->interval_ns()) return;  // audio came meanwhile
      if (self->st_->opts.audio_quiet.count() == 0) {       // nobody waits for pauses: only the end is looked for
        self->probe_end();
        return;
      }
      auto& layer = self->ws_.next_layer();
      if (layer.holding()) {
        const std::size_t waiting = layer.queued();
        if (waiting > 0) {
          ++self->st_->stats->held_audio_releases;
          layer.release(waiting, [raw = self.get()] { raw->pause(); });
          return;
        }
        layer.release();
      }
      self->pause();
    });
  }

  // `early`: what the client sent behind its upgrade request (client_layer::preload).
  void run(http::request<http::string_body> req, session_actor session, asio::const_buffer early) {
    session_ = std::move(session);
    ws_.next_layer().count_reads(&st_->stats->socket_reads);
    if (st_->opts.ws_max_frames_per_second > 0) {
      ws_.next_layer().limit_frames(st_->opts.ws_max_frames_per_second, [this] {
        asio::post(ws_.get_executor(), [self = this->shared_from_this()] { self->on_frame_flood(); });
      });
    }
    ws_.next_layer().preload(static_cast<const std::uint8_t*>(early.data()), early.size());
    const auto key = req[http::field::sec_websocket_key];
    std::string subprotocol;
    subprotocol_of(req, subprotocol);  // valid: checked before the upgrade was decided
    ws_.async_accept(std::string_view(key.data(), key.size()), subprotocol,
                     beast::bind_front_handler(&ws_session::on_accept, this->shared_from_this()));
  }

  // Called on the strand (posted by the sink).
  void enqueue(const shared_text& text, delivery how) {
    if (close_requested_ || finished_) return;
    const auto limit = st_->opts.send_queue_bytes;
    const auto size = text->size();
    if (how == delivery::skippable && writer_.queued_bytes() + size > limit / 2) {
      ++st_->stats->partials_skipped;
      return;
    }
    if (writer_.queued_bytes() + size > limit) {
      ++st_->stats->slow_client_closes;
      note(*st_, "ws.slow_client_closes",
           "client " + client_ + " reads too slowly: its queue passed CLIENT_SEND_QUEUE_BYTES, closed 4409");
      request_close(4409, "Client too slow", false);
      return;
    }
    writer_.push({frame_kind::text, text});
    if (opened_) writer_.pump(this->shared_from_this());
  }

  // Graceful: after everything queued so far. Abortive: drops what is queued (not what is in flight).
  void request_close(std::uint16_t code, std::string reason, bool graceful) {
    if (close_requested_ || finished_) return;
    close_requested_ = true;
    ws_.next_layer().stop_tracking();  // the client's close frame must not wait behind a held chunk
    if (!graceful) {
      writer_.drop_waiting();
      if (writer_.writing()) make_room_to_close(raw_socket(beast::get_lowest_layer(ws_)), writer_.in_flight_bytes());
    }
    writer_.close_when_done(websocket::close_reason(static_cast<websocket::close_code>(code), reason));
    arm_close_timer();
    if (opened_) writer_.pump(this->shared_from_this());
  }

  auto executor() { return ws_.get_executor(); }

private:
  void on_accept(beast::error_code ec) {
    if (ec) {
      caf::anon_send(session_, closed_atom::value, false);
      return;
    }
    opened_ = true;
    // A provider that takes audio in chunks: each chunk may wait in the kernel until its last frame is in.
    hold_chunks_ = batch_bytes_ > 0 && st_->opts.audio_quiet.count() > 0 && ws_.next_layer().track_audio();
    ++st_->stats->websockets;
    last_pong_ = clock::now();
    caf::anon_send(session_, open_atom::value, make_sink());
    arm_ping();
    quiet_.owner = this->weak_from_this();
    st_->quiet->add(quiet_);
    do_read();
  }

  client_sink_ptr make_sink();

  // The audio paused: the session sends what waits in a partial chunk now and counts its chunks afresh from here, and
  // so do we (or every chunk after the pause would wait for the frames that complete ours). Nothing is held until
  // audio flows again.
  void pause() {
    hand_over_audio();
    reset_abs_ += batched_total_;
    batched_total_ = 0;
    quiet_.pending.store(false, std::memory_order_relaxed);  // this pause is taken (frames read for it set it)
    quiet_.held.store(false, std::memory_order_relaxed);
    ws_.next_layer().hold_until(0, 0);
    caf::anon_send(session_, quiet_atom::value);
    probe_end();
  }

  // From the pause watch: nothing came for the quiet interval after a read that took no audio. The end is looked for
  // as at an audio pause.
  void reads_paused() override {
    asio::post(ws_.get_executor(), [self = this->shared_from_this()] {
      if (steady_ns() - self->quiet_.last_other_ns.load() < self->st_->quiet->interval_ns()) return;  // more came
      self->probe_end();
    });
  }

  // A client's end of the stream (TCP FIN) that came together with its last bytes is not seen by the read that took
  // them: edge_socket.hpp's read reports the socket exhausted when it comes back short, and the end raises no edge of
  // its own after that. Nothing would notice until the next ping's write fails (WS_PING_INTERVAL_MS), or its pong never
  // comes (a client that closed only its sending side still takes the ping). So at each pause one peek asks the kernel
  // (wake_on_unseen_end): a pause in the audio, or the quiet interval after any other bytes (a listener's text
  // message, a control frame, part of a frame).
  void probe_end() {
    if (finished_ || close_requested_) return;
    if (wake_on_unseen_end(raw_socket(beast::get_lowest_layer(ws_)))) ++st_->stats->ends_found_at_pause;
  }

  // More frames than the budget (pings and empty continuation frames included, which no other handler sees): closed
  // 1008; its reads are paced meanwhile.
  void on_frame_flood() {
    if (finished_ || close_requested_) return;
    ++st_->stats->frame_floods;
    note(*st_, "ws.frame_floods",
         "client " + client_ + " sent more than " +
             std::to_string(static_cast<long long>(st_->opts.ws_max_frames_per_second)) +
             " WebSocket frames a second (" + std::to_string(static_cast<int>(frame_burst_seconds)) +
             " s of it at once): closed 1008");
    request_close(1008, "Too many messages", false);
  }

  // The client's bytes are read straight into one buffer of the connection's and parsed there, in place
  // (client_frame_reader): `[head_, msg_start_)` holds the binary messages not yet handed over, `[msg_start_, out_)`
  // the payload of the message being read (unmasked), `[scan_, filled_)` bytes read and not yet parsed, and the read
  // in flight writes behind `filled_`. Headers and control frames are cut out as they are parsed.
  // Between chunks the buffer is empty, and it goes: a connection that waits for its next chunk holds none. That read
  // takes the first bytes of the next frame into `first_` (the rest stays in the kernel, or in the client layer's
  // read-ahead), and the buffer comes back for them. Audio handed over frame by frame (batch_bytes_ 0: /egress/audio,
  // a provider without chunks) keeps its buffer: it would go and come back with every frame.
  void do_read() {
    compact();
    const auto held = rx_.capacity();
    reading_ = true;
    if (filled_ == 0 && batch_bytes_ > 0) {
      boost::container::vector<std::uint8_t>().swap(rx_);
      st_->stats->read_buffer_bytes -= static_cast<std::int64_t>(held);
      ws_.next_layer().async_read_some(
          asio::buffer(first_),
          asio::bind_executor(drain_, beast::bind_front_handler(&ws_session::on_first_read, this->shared_from_this())));
      return;
    }
    if (held > 2 * read_room_ && filled_ + min_read_room <= read_room_) {
      // A message far larger than a chunk grew the buffer: back to the normal size once what is left fits, so a
      // client cannot keep WS_MAX_MESSAGE of the server's memory for the life of its connection.
      boost::container::vector<std::uint8_t> normal(read_room_, boost::container::default_init);
      std::memcpy(normal.data(), rx_.data(), filled_);
      rx_.swap(normal);
    } else if (rx_.size() - filled_ < min_read_room) {
      rx_.resize(filled_ + read_room_, boost::container::default_init);
    }
    if (rx_.capacity() != held)
      st_->stats->read_buffer_bytes += static_cast<std::int64_t>(rx_.capacity()) - static_cast<std::int64_t>(held);
    ws_.next_layer().async_read_some(
        asio::buffer(rx_.data() + filled_, rx_.size() - filled_),
        asio::bind_executor(drain_, beast::bind_front_handler(&ws_session::on_read, this->shared_from_this())));
  }

  // The first bytes after an empty buffer: the buffer again, with them at its start.
  void on_first_read(beast::error_code ec, std::size_t n) {
    if (!ec) {
      rx_.resize(read_room_, boost::container::default_init);
      st_->stats->read_buffer_bytes += static_cast<std::int64_t>(rx_.capacity());
      std::memcpy(rx_.data(), first_.data(), n);
    }
    on_read(ec, n);
  }

  void on_read(beast::error_code ec, std::size_t n) {
    reading_ = false;
    if (ec) {
      on_gone();
      return;
    }
    filled_ += n;
    using kind = ws::client_frame_reader::kind;
    bool audio = false;
    for (;;) {
      auto e = reader_.next(rx_.data(), scan_, filled_, out_);
      if (e.what == kind::more) break;
      switch (e.what) {
        case kind::binary:
          on_binary(e.size);
          audio = true;
          break;
        case kind::text:
          ++st_->stats->frames_in;
          hand_over_audio();  // what the client sent before this message reaches its session first
          out_ = msg_start_;
          caf::anon_send(session_, text_atom::value, std::move(e.data));
          break;
        case kind::ping:
          on_ping(std::move(e.data));
          break;
        case kind::pong:
          last_pong_ = clock::now();
          break;
        case kind::close:
        case kind::error:
          on_closing(e);
          break;
        case kind::more:
          break;
      }
      if (reader_.ended()) break;
    }
    if (scan_ == filled_) scan_ = filled_ = out_;  // all parsed: the room the headers took is free again
    if (!audio) {  // the pause watch looks for an end that came with these bytes (probe_end)
      quiet_.last_other_ns.store(steady_ns(), std::memory_order_relaxed);
      quiet_.other_pending.store(true, std::memory_order_relaxed);
    } else if (quiet_.other_pending.load(std::memory_order_relaxed)) {  // audio again: its pause looks for the end
      quiet_.other_pending.store(false, std::memory_order_relaxed);
    }
    if (reader_.ended()) {
      // No more reads: what comes after the client's close frame (or a violation) is dropped by the teardown.
      hand_over_audio();
      filled_ = scan_ = out_ = msg_start_;
      maybe_teardown();
      return;
    }
    if (st_->opts.backlog_floor_bytes > 0 && last_frame_ns_ >= next_backlog_check_ns_ && !close_requested_)
      check_backlog();
    do_read();
    if (hold_chunks_) quiet_.held.store(ws_.next_layer().holding(), std::memory_order_relaxed);
  }

  // Once a second while audio comes: what the kernel holds unread for this socket. A server that keeps up reads
  // whatever arrives, so little ever waits there (a chunk held back by the low-water mark is far below the floor); one
  // held up once (a pause of the process) reads the pile away at once. Audio waiting at every check for
  // behind_checks seconds means the server reads slower than the client sends. (How far behind is not known here: the
  // kernel's receive buffer, about 64 KiB unless it grew, fills, and the rest waits in the client.)
  void check_backlog() {
    const auto now = last_frame_ns_;
    next_backlog_check_ns_ = now + 1'000'000'000;
    int n = 0;
    if (::ioctl(raw_socket(beast::get_lowest_layer(ws_)).native_handle(), FIONREAD, &n) != 0 || n < 0) n = 0;
    const auto unread = static_cast<std::uint64_t>(n);
    backlog_checks_ = unread >= st_->opts.backlog_floor_bytes ? std::min(backlog_checks_ + 1, behind_checks) : 0;
    if (backlog_checks_ == behind_checks) caf::anon_send(session_, behind_atom::value, unread);
  }

  // A binary message of `size` bytes, just before out_.
  void on_binary(std::size_t size) {
    ++st_->stats->frames_in;
    msg_start_ = out_;
    last_frame_ns_ = steady_ns();  // before it is handed over: the newest audio's read (audio_chunk::read_ns)
    if (batch_bytes_ == 0) {
      hand_over_audio();  // /egress/audio: each frame as it comes, alone
    } else {
      // One allocation a chunk for the sizes, not one for each doubling: room for as many frames as the last chunk had.
      if (frames_.capacity() == 0) frames_.reserve(frames_hint_);
      frames_.push_back(static_cast<std::uint32_t>(size));
      const auto before = batched_total_;
      batched_total_ += size;
      if (batched_total_ / batch_bytes_ > before / batch_bytes_) hand_over_audio();
      if (hold_chunks_ && !close_requested_)
        ws_.next_layer().hold_until(reset_abs_ + (batched_total_ / batch_bytes_ + 1) * batch_bytes_, size);
    }
    quiet_.last_audio_ns.store(last_frame_ns_, std::memory_order_relaxed);
    quiet_.pending.store(true, std::memory_order_relaxed);
  }

  // A ping is answered with a pong carrying its payload. While one pong waits to be written, later pings are not
  // answered again (RFC 6455 §5.5.3 allows answering only one), so a client flooding pings grows no queue (the frame
  // budget closes it meanwhile).
  void on_ping(std::string payload) {
    if (close_requested_ || pong_waiting_) return;
    pong_waiting_ = true;
    writer_.push({frame_kind::pong, std::make_shared<const std::string>(std::move(payload))});
    writer_.pump(this->shared_from_this());
  }

  // The client's close frame, or a violation of the protocol: the reading has ended. A close is answered with the
  // client's code and reason (1000 for none), as RFC 6455 §5.5.1 asks and Node's `ws` answers; a violation fails the
  // connection with the code the reader gives (1002, 1007, 1009). Our own close, if one was asked for already, is the
  // answer. Then the teardown.
  void on_closing(const ws::client_frame_reader::event& e) {
    hand_over_audio();
    std::uint16_t code = e.code == 1005 ? 1000 : e.code;
    std::string reason;
    if (e.what == ws::client_frame_reader::kind::error) {
      ++st_->stats->protocol_errors;
      note(*st_, "ws.protocol_errors",
           "client " + client_ + " broke the WebSocket protocol (" + e.data + "): closed " + std::to_string(code));
      reason = e.reason;
    } else if (!close_requested_) {
      peer_closed_ = true;  // the client's own close, not its answer to ours
      reason = e.data;
    }
    if (close_requested_) return;
    close_requested_ = true;
    ws_.next_layer().stop_tracking();
    writer_.drop_waiting();
    writer_.close_when_done(websocket::close_reason(static_cast<websocket::close_code>(code), reason));
    arm_close_timer();
    writer_.pump(this->shared_from_this());
  }

  void on_written(beast::error_code ec, const ws_frame& f) {
    if (f.kind == frame_kind::pong) pong_waiting_ = false;
    if (ec) {
      // The writer closed the socket (or will not write again): a read in flight reports the end; without one, this
      // is the end.
      if (f.kind == frame_kind::close) {
        beast::error_code ignored;
        raw_socket(beast::get_lowest_layer(ws_)).close(ignored);
      }
      if (!reading_ && !torn_down_) on_gone();
      return;
    }
    if (f.kind == frame_kind::text) ++st_->stats->frames_out;
    if (f.kind == frame_kind::close) {
      close_sent_ = true;
      maybe_teardown();
    }
  }

  // Both close frames have passed (ours written, the client's read, or the reading failed): the server ends the
  // connection (server_websocket.hpp), bounded by the close timer.
  void maybe_teardown() {
    if (finished_ || torn_down_ || !close_sent_ || !reader_.ended() || reading_) return;
    torn_down_ = true;
    ws_.async_teardown([self = this->shared_from_this()] { self->on_gone(); });
  }

  void arm_close_timer() {
    close_timer_.expires_after(st_->opts.close_timeout);
    close_timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (ec || self->finished_) return;
      self->ws_.next_layer().stop_pacing();  // a paced read fails at once on the closed socket
      beast::error_code ignored;
      raw_socket(beast::get_lowest_layer(self->ws_)).close(ignored);
      // A read, a write or the teardown in flight reports the end; with none, this is it.
      if (!self->reading_ && !self->torn_down_ && !self->writer_.writing()) self->on_gone();
    });
  }

  // The frames not yet handed over go to the session now (one message, or none when nothing waits), copied out at
  // their exact size: the buffer stays (a read in flight, from the quiet timer, may be writing behind them).
  void hand_over_audio() {
    if (frames_.empty() && msg_start_ == head_) return;
    audio_chunk out;
    out.pcm.assign(rx_.begin() + static_cast<std::ptrdiff_t>(head_),
                   rx_.begin() + static_cast<std::ptrdiff_t>(msg_start_));
    frames_hint_ = static_cast<std::uint8_t>(std::clamp<std::size_t>(frames_.size(), 1, 16));
    out.frames = std::move(frames_);
    out.read_ns = last_frame_ns_;
    frames_ = {};
    head_ = msg_start_;
    caf::anon_send(session_, audio_atom::value, std::move(out));
  }

  // Moves what is left (a message partly read, bytes not yet parsed) to the front of the buffer, one behind the
  // other; never while a read is in flight.
  void compact() {
    if (head_ == 0 && out_ == scan_) return;
    const auto kept = out_ - head_;
    if (head_ > 0) std::memmove(rx_.data(), rx_.data() + head_, kept);
    const auto raw = filled_ - scan_;
    if (raw > 0) std::memmove(rx_.data() + kept, rx_.data() + scan_, raw);
    msg_start_ -= head_;
    head_ = 0;
    out_ = scan_ = kept;
    filled_ = kept + raw;
  }

  void on_gone() {
    if (finished_) return;
    finished_ = true;
    ping_timer_.cancel();
    close_timer_.cancel();
    st_->quiet->remove(quiet_);
    writer_.stop();  // a write in flight keeps its own buffer until it completes
    if (opened_) --st_->stats->websockets;
    hand_over_audio();
    caf::anon_send(session_, closed_atom::value, peer_closed_);
  }

  void arm_ping() {
    ping_timer_.expires_after(st_->opts.ping_interval);
    ping_timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (ec || self->finished_ || self->close_requested_) return;
      if (clock::now() - self->last_pong_ >= self->st_->opts.pong_timeout) {
        ++self->st_->stats->heartbeat_timeouts;
        note(*self->st_, "ws.heartbeat_timeouts_total",
             "client " + self->client_ + " answered no ping within WS_PONG_TIMEOUT_MS: closed 4408");
        self->request_close(4408, "Heartbeat timeout", false);
        return;
      }
      self->writer_.push({frame_kind::ping, nullptr});
      self->writer_.pump(self);
      self->arm_ping();
    });
  }

  using websocket_type = server_websocket<client_layer<typename ws_transport<Stream>::type>>;

  std::shared_ptr<shared_state> st_;
  token_ptr token_;
  std::string client_;  // as logs name it (client_of: behind a trusted proxy, the forwarded address)
  websocket_type ws_;
  ws_writer<websocket_type> writer_;
  ws::client_frame_reader reader_;
  session_actor session_;
  // Binary frames not yet handed to the session (audio_batch_bytes; 0 for /egress/audio: LiveKit's 48 kHz
  // stereo frames go one by one to the session's resampler), and the message being read (see do_read).
  static constexpr std::size_t min_read_room = 1024;
  std::size_t batch_bytes_ = 0;
  std::size_t read_room_ = 0;                  // the buffer's size: a chunk and a frame (8 KiB for /egress/audio)
  boost::container::vector<std::uint8_t> rx_;  // empty between chunks when audio goes in chunks (do_read)
  std::array<std::uint8_t, 32> first_{};       // the read into an empty buffer
  std::vector<std::uint32_t> frames_;          // the sizes of the frames in [head_, msg_start_)
  std::uint8_t frames_hint_ = 8;               // the frames of the last chunk handed over (at most 16)
  std::size_t head_ = 0, msg_start_ = 0, out_ = 0, scan_ = 0, filled_ = 0;
  std::uint64_t batched_total_ = 0;
  // where batched_total_ counts from (the last pause), in binary payload bytes since the stream began (the count
  // the client layer keeps)
  std::uint64_t reset_abs_ = 0;
  bool hold_chunks_ = false;
  bool opened_ = false;
  bool reading_ = false;          // a read of the client's bytes is in flight
  bool pong_waiting_ = false;     // a pong is queued or being written
  bool close_requested_ = false;  // our close frame is queued (or the client's close is being answered)
  bool close_sent_ = false;       // ... and written
  bool peer_closed_ = false;      // the client closed first (a close frame before any close of ours)
  bool torn_down_ = false;        // the teardown has begun
  bool finished_ = false;
  asio::steady_timer ping_timer_;
  asio::steady_timer close_timer_;
  quiet_slot quiet_;                // in st_->quiet while the WebSocket is open
  std::int64_t last_frame_ns_ = 0;  // when the newest binary frame was read (steady clock)
  // check_backlog: when it looks next (steady ns), and how many checks in a row found the floor's worth waiting (at
  // most behind_checks)
  static constexpr int behind_checks = 5;
  std::int64_t next_backlog_check_ns_ = 0;
  int backlog_checks_ = 0;
  clock::time_point last_pong_;
  // The reads' completions: the frames of a chunk read at once complete one after another in one handler, not in a
  // round of the scheduler each (drain_executor.hpp)
  drain_executor drain_;
};

// The actors' handle on a WebSocket: posts onto the connection's strand; a no-op once it is gone.
template <class Stream>
class ws_sink final : public client_sink {
public:
  using executor_type = decltype(std::declval<ws_session<Stream>&>().executor());
  ws_sink(std::weak_ptr<ws_session<Stream>> w, executor_type ex) : w_(std::move(w)), ex_(std::move(ex)) {}

  void send(shared_text json, delivery how) override {
    asio::post(ex_, [w = w_, json = std::move(json), how] {
      if (auto s = w.lock()) s->enqueue(json, how);
    });
  }
  void close(std::uint16_t code, std::string reason) override {
    asio::post(ex_, [w = w_, code, reason = std::move(reason)] {
      if (auto s = w.lock()) s->request_close(code, reason, true);
    });
  }

private:
  std::weak_ptr<ws_session<Stream>> w_;
  executor_type ex_;
};

template <class Stream>
client_sink_ptr ws_session<Stream>::make_sink() {
  return std::make_shared<ws_sink<Stream>>(this->weak_from_this(), ws_.get_executor());
}

template <class Stream>
class http_session;

template <class Session>
class http_responder_impl final : public http_responder {
public:
  explicit http_responder_impl(std::shared_ptr<Session> s) : s_(std::move(s)) {}
  ~http_responder_impl() override {
    if (!done_) respond(error_response(503, "unavailable"));  // the actor is gone: never leave a request hanging
  }
  void respond(http_response res) override {
    if (done_.exchange(true)) return;
    auto s = s_;
    asio::post(s->executor(), [s, res = std::move(res)]() mutable { s->write_reply(std::move(res)); });
  }

private:
  std::shared_ptr<Session> s_;
  std::atomic<bool> done_{false};
};

template <class Session>
class upgrade_responder_impl final : public upgrade_responder {
public:
  explicit upgrade_responder_impl(std::shared_ptr<Session> s) : s_(std::move(s)) {}
  ~upgrade_responder_impl() override {
    if (!done_) reject(error_response(503, "unavailable"));
  }
  void accept(session_actor session) override {
    if (done_.exchange(true)) return;
    auto s = s_;
    asio::post(s->executor(), [s, session = std::move(session)]() mutable { s->start_websocket(std::move(session)); });
  }
  void reject(http_response res) override {
    if (done_.exchange(true)) return;
    auto s = s_;
    res.close = true;
    asio::post(s->executor(), [s, res = std::move(res)]() mutable { s->write_reply(std::move(res)); });
  }

private:
  std::shared_ptr<Session> s_;
  std::atomic<bool> done_{false};
};

// One HTTP/1.1 connection (keep-alive), plain or TLS.
template <class Stream>
class http_session : public std::enable_shared_from_this<http_session<Stream>> {
  static constexpr bool tls = std::is_same_v<Stream, server_tls>;

public:
  http_session(std::shared_ptr<shared_state> st, Stream&& stream, beast::flat_buffer&& buffer, token_ptr token)
      : st_(std::move(st)),
        token_(std::move(token)),
        stream_(std::move(stream)),
        buffer_(std::move(buffer)),
        deadline_(stream_.get_executor()) {}

  void run() {
    if constexpr (!tls) beast::get_lowest_layer(stream_).expires_never();  // the detector's; ours is deadline_
    if constexpr (tls) {
      expire_after(st_->opts.request_timeout);
      stream_.async_handshake([self = this->shared_from_this()](beast::error_code ec) {
        if (ec) {
          ++self->st_->stats->tls_handshake_failures;
          note(*self->st_, "net.tls_handshake_failures",
               "TLS handshake with " + peer_of(self->stream_) + " failed: " +
                   (self->expired_ ? std::string("no handshake within HTTP_REQUEST_TIMEOUT_MS") : ec.message()));
          return;
        }
        self->do_read();
      });
    } else {
      do_read();
    }
  }

  auto executor() { return stream_.get_executor(); }

  void write_reply(http_response r) {
    auto res = std::make_shared<beast_response>(
        render_response(std::move(r), version_, keep_alive_, head_, st_->opts.cors_origin));
    const bool keep = res->keep_alive();
    reading_ = false;  // an answer before the request was read whole (417) goes out under the same bound as any
    expire_after(st_->opts.request_timeout);
    http::async_write(stream_, *res, [self = this->shared_from_this(), res, keep](beast::error_code ec, std::size_t) {
      if (ec) return;
      if (keep) {
        self->do_read();
      } else {
        self->do_eof();
      }
    });
  }

  void start_websocket(session_actor session) {
    upgraded_ = true;
    deadline_.cancel();  // the WebSocket has its own timeouts
    // LiveKit's 48 kHz stereo frames go one by one to the session's resampler; a participant's are batched.
    const bool egress = upgrade_req_.target().starts_with("/egress/");
    auto ws = std::make_shared<ws_session<Stream>>(st_, std::move(stream_), token_, std::move(client_), !egress);
    ws->run(std::move(upgrade_req_), std::move(session), buffer_.data());
  }

private:
  void do_read() {
    parser_.emplace();
    limit_parser(*parser_, st_->opts.body_limit);
    reading_ = true;
    expire_after(first_ ? st_->opts.request_timeout : st_->opts.idle_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&http_session::on_header, this->shared_from_this()));
  }

  // The head is in (the deadline set above bounds the body too). A client that waits for "100 Continue" before its
  // body gets it first; an expectation we cannot meet is refused 417 (expectation_of).
  void on_header(beast::error_code ec, std::size_t n) {
    if (ec || parser_->is_done()) {
      on_read(ec, n);
      return;
    }
    switch (expectation_of(parser_->get())) {
      case expectation::unmet:
        version_ = parser_->get().version();
        head_ = false;
        refuse("an Expect other than 100-continue", error_response(417, "expectation_failed"));  // body unread
        return;
      case expectation::send_continue: {
        static const char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";
        asio::async_write(stream_, asio::buffer(continue_line, sizeof continue_line - 1),
                          [self = this->shared_from_this()](beast::error_code e, std::size_t) {
                            if (!e) self->read_body();
                          });
        return;
      }
      case expectation::none:
        read_body();
        return;
    }
  }

  void read_body() {
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&http_session::on_read, this->shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    first_ = false;
    reading_ = false;
    const bool timed_out = std::exchange(answer_timeout_, false);
    if (ec && timed_out) {  // part of a request came, not all of it in time: RFC 9110 §15.5.9, as Node answers
      refuse("no complete request within its timeout", error_response(408, "request_timeout"));
      return;
    }
    if (ec == http::error::end_of_stream) {
      do_eof();
      return;
    }
    if (ec) {
      auto answer = parse_failure_response(ec);
      if (!answer) return;  // network error or timeout: just drop the connection
      if (answer->status == 413) {
        ++st_->stats->bodies_too_large;
        note(*st_, "net.bodies_too_large", "request body from " + peer_of(stream_) + " over the limit: 413");
        keep_alive_ = false;
        write_reply(std::move(*answer));
      } else {
        refuse(ec.message(), std::move(*answer));
      }
      return;
    }
    ++st_->stats->http_requests;
    auto& req = parser_->get();
    version_ = req.version();
    keep_alive_ = keeps_alive(req);
    auto in = decide_request(req, std::is_same_v<Stream, server_tls>);
    head_ = in.head;
    if (in.kind == inbound_request::refused) {
      refuse(in.problem, std::move(in.answer));  // what follows in the buffer may be a smuggled request
      return;
    }
    auto& out = in.request;
    beast::error_code ignored;
    auto ep = raw_socket(beast::get_lowest_layer(stream_)).remote_endpoint(ignored);
    if (!ignored) out.remote = client_of(*st_, ep, out);
    client_ = out.remote;
    // The responder answers 503 if the actor goes away without answering; the request timeout bounds the rest.
    expire_after(st_->opts.request_timeout);
    if (in.kind == inbound_request::upgrade) {
      upgrade_req_ = parser_->release();
      caf::anon_send(
          st_->handler, upgrade_atom::value, std::move(out),
          upgrade_responder_ptr{std::make_shared<upgrade_responder_impl<http_session>>(this->shared_from_this())});
    } else {
      caf::anon_send(st_->handler, http_atom::value, std::move(out),
                     http_responder_ptr{std::make_shared<http_responder_impl<http_session>>(this->shared_from_this())});
    }
  }

  // A bad request: counted, logged with `problem`, answered, and the connection closes (what follows it is never read
  // as a request).
  void refuse(const std::string& problem, http_response answer) {
    ++st_->stats->bad_requests;
    note(*st_, "net.bad_requests", "bad request from " + peer_of(stream_) + ": " + problem);
    keep_alive_ = false;
    write_reply(std::move(answer));
  }

  // The connection ends: over TLS our close_notify first, then our FIN; then what the client still sends is read and
  // dropped until its end, all within the close timeout. A client may still be sending (the body of a request refused
  // from its head, 413 or 417): a socket closed with unread bytes resets the connection, and such a client fails on
  // its next write ("broken pipe") without reading the answer it was given.
  void do_eof() {
    expire_after(st_->opts.close_timeout);
    if constexpr (tls) {
      stream_.async_shutdown([self = this->shared_from_this()](beast::error_code) { self->linger(); });
    } else {
      linger();
    }
  }
  // A refused body may be megabytes: read 16 KiB at a time.
  void linger() {
    end_tcp_after<16384>(beast::get_lowest_layer(stream_), [self = this->shared_from_this()] {});
  }

  // The time the connection has for what it does now (a handshake, a request, an answer, an idle keep-alive). When
  // it runs out, the socket is closed (what is in flight fails), unless part of a request has come on a plain
  // connection: then the read is cancelled and the client told 408 (on_read), as Node tells it. A connection that sent
  // nothing is closed without a word (an idle keep-alive, RFC 9112 §9.6).
  void expire_after(std::chrono::milliseconds d) {
    deadline_.expires_after(d);
    deadline_.async_wait([w = this->weak_from_this()](beast::error_code ec) {
      auto self = w.lock();
      if (ec || !self || self->upgraded_) return;
      self->expired_ = true;
      beast::error_code ignored;
      auto& socket = raw_socket(beast::get_lowest_layer(self->stream_));
      if constexpr (!tls) {  // over TLS a write after the cancelled read broke the record layer: closed as before
        if (self->reading_ && (self->buffer_.size() > 0 || (self->parser_ && self->parser_->got_some()))) {
          self->answer_timeout_ = true;
          socket.cancel(ignored);
          return;
        }
      }
      socket.close(ignored);
    });
  }

  std::shared_ptr<shared_state> st_;
  token_ptr token_;
  Stream stream_;
  beast::flat_buffer buffer_;
  std::optional<request_parser> parser_;
  beast_request upgrade_req_;
  std::string client_;  // of the last request, as logs name it (client_of)
  unsigned version_ = 11;
  bool keep_alive_ = true;
  bool head_ = false;  // the request being answered is a HEAD
  bool first_ = true;
  bool upgraded_ = false;        // the stream is the WebSocket's now
  bool expired_ = false;         // the deadline ran out (and closed the socket, or cancelled a request's read)
  bool reading_ = false;         // a request is being read (do_read to on_read)
  bool answer_timeout_ = false;  // the deadline cancelled the read of a request begun: answered 408
  asio::steady_timer deadline_;  // expire_after
};

// Sniffs the first bytes: TLS ClientHello or plain HTTP, on the same port.
class detector : public std::enable_shared_from_this<detector> {
public:
  detector(std::shared_ptr<shared_state> st, tcp::socket&& socket)
      : st_(std::move(st)), token_(std::make_shared<connection_token>(st_->stats)), stream_(std::move(socket)) {}

  void run() {
    if (!st_->tls_current()) {
      std::make_shared<http_session<plain_stream>>(st_, std::move(stream_), std::move(buffer_), token_)->run();
      return;
    }
    stream_.expires_after(st_->opts.request_timeout);
    beast::async_detect_ssl(stream_, buffer_, [self = shared_from_this()](beast::error_code ec, bool is_tls) {
      self->on_detect(ec, is_tls);
    });
  }

private:
  void on_detect(beast::error_code ec, bool is_tls) {
    if (ec) return;
    if (is_tls) {
      // What found the ClientHello is its start: the handshake reads it first.
      server_tls tls(edge_socket(stream_.release_socket()), *st_->tls_current(), buffer_.data());
      std::make_shared<http_session<server_tls>>(st_, std::move(tls), beast::flat_buffer(), token_)->run();
    } else {
      std::make_shared<http_session<plain_stream>>(st_, std::move(stream_), std::move(buffer_), token_)->run();
    }
  }

  std::shared_ptr<shared_state> st_;
  token_ptr token_;
  plain_stream stream_;
  beast::flat_buffer buffer_;
};

class listener : public std::enable_shared_from_this<listener> {
public:
  listener(io_runtime& io, std::shared_ptr<shared_state> st)
      : io_(io), st_(std::move(st)), acceptor_(asio::make_strand(io.context())), retry_(acceptor_.get_executor()) {}

  void open(const tcp::endpoint& ep) {
    acceptor_.open(ep.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen(asio::socket_base::max_listen_connections);
  }

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }

  void run() { do_accept(); }

  void stop() {
    asio::post(acceptor_.get_executor(), [self = shared_from_this()] {
      beast::error_code ignored;
      self->acceptor_.close(ignored);
      self->retry_.cancel();
    });
  }

private:
  void do_accept() {
    acceptor_.async_accept(io_.connection_executor(), [self = shared_from_this()](beast::error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted || !self->acceptor_.is_open()) return;
      if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space || ec == asio::error::no_memory ||
          ec.value() == ENFILE) {
        // Out of descriptors or memory: accepting again at once would fail again at once (a spinning core);
        // the connection waits in the backlog while descriptors are freed.
        ++self->st_->stats->accept_errors;
        note(*self->st_, "net.accept_errors", "cannot accept connections: " + ec.message() + "; pausing 100 ms");
        self->retry_.expires_after(std::chrono::milliseconds(100));
        self->retry_.async_wait([self](beast::error_code e) {
          if (!e && self->acceptor_.is_open()) self->do_accept();
        });
        return;
      }
      if (!ec) {
        beast::error_code ignored;
        s.set_option(tcp::no_delay(true), ignored);
        if (self->st_->opts.socket_send_buffer > 0)
          s.set_option(asio::socket_base::send_buffer_size(self->st_->opts.socket_send_buffer), ignored);
        std::make_shared<detector>(self->st_, std::move(s))->run();
      }
      self->do_accept();
    });
  }

  io_runtime& io_;
  std::shared_ptr<shared_state> st_;
  tcp::acceptor acceptor_;
  asio::steady_timer retry_;
};

}  // namespace

struct server::impl {
  std::shared_ptr<io_runtime> io;
  std::shared_ptr<shared_state> st;
  std::shared_ptr<listener> lis;
  std::uint16_t port = 0;
};

server::server(server_options opts, gateway_actor handler, std::shared_ptr<net_stats> stats,
               std::shared_ptr<io_runtime> io)
    : impl_(new impl) {
  impl_->io = io ? std::move(io) : std::make_shared<io_runtime>(opts.io_threads);
  impl_->st = std::make_shared<shared_state>();
  impl_->st->opts = std::move(opts);
  impl_->st->trusted = parse_trusted(impl_->st->opts.trusted_proxies);
  impl_->st->handler = std::move(handler);
  impl_->st->quiet = std::make_shared<quiet_watch>(
      impl_->io->context(), impl_->st->opts.audio_quiet.count() > 0 ? impl_->st->opts.audio_quiet : end_probe_interval);
  impl_->st->stats = stats ? std::move(stats) : std::make_shared<net_stats>();
}

server::~server() {
  stop_accepting();
}

namespace {
// The server's TLS context: TLS 1.2 and later, the certificate chain and its key from the configured files.
std::shared_ptr<ssl::context> load_tls(const server_options& opts) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  try {
    ctx->use_certificate_chain_file(opts.tls_cert_file);
    ctx->use_private_key_file(opts.tls_key_file, ssl::context::pem);
    // A key of another type than the certificate's (EC for an RSA certificate) loads without complaint into a slot of
    // its own, and every handshake would fail: checked here.
    if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
      ERR_clear_error();
      throw std::runtime_error("the key is not the certificate's");
    }
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot load TLS certificate/key (" + opts.tls_cert_file + ", " + opts.tls_key_file +
                             "): " + e.what());
  }
  return ctx;
}
}  // namespace

void server::start() {
  auto& st = *impl_->st;
  if (!st.opts.tls_cert_file.empty() || !st.opts.tls_key_file.empty()) {
    if (st.opts.tls_cert_file.empty() || st.opts.tls_key_file.empty())
      throw std::runtime_error("TLS needs both TLS_CERT_FILE and TLS_KEY_FILE");
    auto ctx = load_tls(st.opts);
    std::lock_guard<std::mutex> lock(st.tls_mu);
    st.tls = std::move(ctx);
  }
  beast::error_code ec;
  auto address = asio::ip::make_address(st.opts.host, ec);
  if (ec) throw std::runtime_error("HOST is not an IP address: " + st.opts.host);
  impl_->lis = std::make_shared<listener>(*impl_->io, impl_->st);
  try {
    impl_->lis->open(tcp::endpoint(address, st.opts.port));
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot listen on " + st.opts.host + ":" + std::to_string(st.opts.port) + ": " + e.what());
  }
  impl_->port = impl_->lis->port();
  impl_->lis->run();
}

std::uint16_t server::port() const {
  return impl_->port;
}

bool server::tls() const {
  return impl_->st->tls_current() != nullptr;
}

bool server::reload_tls() {
  auto& st = *impl_->st;
  if (!st.tls_current()) return false;
  std::shared_ptr<ssl::context> fresh;
  try {
    fresh = load_tls(st.opts);
  } catch (const std::exception& e) {
    ++st.stats->tls_reload_failures;
    note(st, "net.tls_reload_failures", std::string(e.what()) + "; the certificate in use serves on");
    throw;
  }
  {
    std::lock_guard<std::mutex> lock(st.tls_mu);
    st.tls.swap(fresh);
  }
  ++st.stats->tls_reloads;
  return true;  // the old context goes with the last connection that began with it (`fresh` holds it until here)
}

void server::stop_accepting() {
  if (impl_->lis) impl_->lis->stop();
}

bool server::drain(std::chrono::milliseconds bound) {
  stop_accepting();
  auto deadline = clock::now() + bound;
  while (impl_->st->stats->connections.load() > 0 && clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  return impl_->st->stats->connections.load() == 0;
}

}  // namespace sw::net
