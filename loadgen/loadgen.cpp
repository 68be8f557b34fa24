#include "loadgen/loadgen.hpp"

#include <pthread.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
#include <system_error>
#include <thread>

#ifdef SW_HAVE_LIBURING
#include <liburing.h>
#endif

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/stateful_actor.hpp>

#include "net/edge_socket.hpp"
#include "net/tls_client.hpp"
#include "proto/load_tag.hpp"
#include "proto/token.hpp"

namespace sw::load::detail {
class conn;
}
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::shared_ptr<sw::load::detail::conn>)

namespace sw::load {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;

namespace {
using opened_atom = caf::atom_constant<caf::atom("lg_open")>;
using closed_atom = caf::atom_constant<caf::atom("lg_closed")>;
using ready_atom = caf::atom_constant<caf::atom("lg_ready")>;
using stop_atom = caf::atom_constant<caf::atom("lg_stop")>;
using timeout_atom = caf::atom_constant<caf::atom("lg_tmout")>;
using done_atom = caf::atom_constant<caf::atom("lg_done")>;

constexpr std::uint8_t mask_key[4] = {0x5a, 0x13, 0xc7, 0x2e};

// A steady_clock time in CLOCK_MONOTONIC nanoseconds (libstdc++'s steady_clock is CLOCK_MONOTONIC).
std::int64_t ns_of(clock_type::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

// The source audio of every participant, masked once: frame k of any participant is bytes [k*F, (k+1)*F) of it,
// looped (F is a multiple of 4, so the mask lines up with every frame).
struct prepared_audio {
  std::string masked;
  std::size_t frame_bytes = 0;
  std::size_t frames = 0;
};

// "key":"value" -> value (no escapes needed for the fields read here).
std::string value_of(const std::string& json, const char* key) {
  const std::string k = std::string("\"") + key + "\":\"";
  auto p = json.find(k);
  if (p == std::string::npos) return {};
  p += k.size();
  auto e = json.find('"', p);
  return e == std::string::npos ? std::string() : json.substr(p, e - p);
}

}  // namespace

namespace detail {

class conn;

// The sends of one tick, submitted together: one io_uring_enter for all the frames a tick sends instead of a sendmsg
// each. What a send costs here is mostly the kernel's, but its syscall entry and exit are a good part of it (on this
// VM, bench/bare_sender.cpp measures a bare sender at 9 µs a frame with sendmsg and 6-7 with io_uring). Each send
// carries MSG_DONTWAIT, so io_uring never parks it: it completes during the submission, whole, in part, or with
// EAGAIN, and the connection writes what the socket did not take as it always did. Off where the kernel refuses
// io_uring (an old kernel, a seccomp profile, io_uring_disabled): then every frame is a sendmsg of its own.
class send_ring {
public:
#ifdef SW_HAVE_LIBURING
  explicit send_ring(bool want) {
    // SUBMIT_ALL (5.18): a send that fails its preparation does not hold back the ones behind it
    if (want)
      on_ = io_uring_queue_init(entries, &ring_, IORING_SETUP_SUBMIT_ALL) == 0 ||
            io_uring_queue_init(entries, &ring_, 0) == 0;
  }
  ~send_ring() {
    if (on_) io_uring_queue_exit(&ring_);
  }
  bool on() const {
    return on_;
  }
  bool full() {
    return io_uring_sq_space_left(&ring_) == 0;
  }
  bool pending() const {
    return queued_ > 0;
  }
  // Queues a sendmsg of `m` on `fd` (the caller checked full()); `index` comes back with its result.
  void queue(int fd, const msghdr* m, std::size_t index) {
    io_uring_sqe* e = io_uring_get_sqe(&ring_);
    io_uring_prep_sendmsg(e, fd, m, MSG_DONTWAIT | MSG_NOSIGNAL);
    io_uring_sqe_set_data64(e, index);
    ++queued_;
  }
  // Submits what is queued and calls done(index, result) for each, in any order.
  template <class F>
  void submit(F&& done) {
    if (queued_ == 0) return;
    const unsigned want = queued_;
    queued_ = 0;
    int r = io_uring_submit(&ring_);
    while (r == -EINTR) r = io_uring_submit(&ring_);
    if (r < 0 || static_cast<unsigned>(r) != want) {
      // not reachable while every completion is taken before the next submission (the completion queue is twice the
      // submission queue); if it happens, the frames' fate is unknown and the run cannot be reported honestly
      std::fprintf(stderr, "sessions-ws-loadgen: io_uring_submit: %s\n",
                   r < 0 ? std::strerror(-r) : "submitted fewer than queued");
      std::_Exit(1);
    }
    ++submissions;
    unsigned seen = 0;
    while (seen < want) {
      io_uring_cqe* c = nullptr;
      // MSG_DONTWAIT sends complete in the submission; waiting is only a guard (a kernel that punts one anyway)
      if (io_uring_peek_cqe(&ring_, &c) != 0 && io_uring_wait_cqe(&ring_, &c) != 0) break;
      const auto index = static_cast<std::size_t>(io_uring_cqe_get_data64(c));
      const int res = c->res;
      io_uring_cqe_seen(&ring_, c);
      ++seen;
      done(index, res);
    }
  }

private:
  static constexpr unsigned entries = 1024;
  io_uring ring_{};
  bool on_ = false;
  unsigned queued_ = 0;

public:
#else
  explicit send_ring(bool) {}
  bool on() const {
    return false;
  }
  bool full() {
    return true;
  }
  bool pending() const {
    return false;
  }
  void queue(int, const msghdr*, std::size_t) {}
  template <class F>
  void submit(F&&) {}

#endif
  std::uint64_t submissions = 0;
};

// One I/O thread of the tool with its own io_context (no strands: everything of a connection runs on its lane), and
// the frame schedule of its connections: a 1 ms tick walks one slot of a wheel as long as the frame period, so each
// connection is visited once per period, in the slot it started in, at no cost per frame but its own send.
struct lane {
  asio::io_context io;
  asio::steady_timer timer{io};
  std::thread thread;
  std::chrono::milliseconds period{20};
  std::vector<std::vector<std::shared_ptr<conn>>> slots;
  clock_type::time_point start;
  std::uint64_t ticks = 0;  // slots walked
  bool ticking = false;
  // While the tick walks its slots, audio frames go to `ring` (when it is on), and `batch` keeps their
  // connections alive until the submission says how each went.
  send_ring ring;
  bool batching = false, flushing = false;
  std::vector<std::shared_ptr<conn>> batch;
  std::uint64_t batched_frames = 0;
  std::uint64_t not_taken_whole = 0;  // audio frames a full socket took in part or not at all (sent later)
  // the figures of this lane's connections (only its thread touches them; merged after the run)
  histogram lag, lag_steady, fanout, fanout_steady, connect, read_delay;

  lane(std::chrono::milliseconds p, bool batch_sends)
      : period(p), slots(static_cast<std::size_t>(p.count())), ring(batch_sends) {}
  // The slot time of the next tick, and its index (for a connection joining now).
  void join(const std::shared_ptr<conn>& c);
  void tick();
  // A frame of `c` to send with the tick's others (false: send it now, the ring is off or full).
  bool queue(const std::shared_ptr<conn>& c, int fd, const msghdr* m);
  // Sends what the tick queued and tells each connection how its frame went (its next, if due, goes in another round).
  void flush();
};

// One participant's WebSocket, written by hand: frames go out prepared (header, masked tag, pre-masked audio in one
// gathered write), what comes in is parsed just enough to count it.
class conn : public std::enable_shared_from_this<conn> {
public:
  conn(lane& l, tcp::endpoint ep, std::string target, std::string host, std::shared_ptr<const prepared_audio> audio,
       std::uint32_t id, std::chrono::milliseconds period, live_figures& live)
      : lane_(l),
        sock_(l.io.get_executor()),
        timer_(l.io),
        ep_(ep),
        target_(std::move(target)),
        host_(std::move(host)),
        audio_(std::move(audio)),
        id_(id),
        period_(period),
        live_(live) {}

  participant_result result;
  friend struct lane;  // its tick's submission reports each frame's send (on_sent)

  int sndbuf_ = 0;       // SO_SNDBUF (0: the kernel's)
  bool egress_ = false;  // a LiveKit egress connection: it ends with a close without status, not `stop`
  // wss: the context (verifying) and the name the server's certificate must carry (set before start())
  std::shared_ptr<asio::ssl::context> tls_context_;
  std::string tls_name_;

  // The participant actor this connection reports to (set before start()).
  void set_owner(caf::actor owner) { owner_ = std::move(owner); }

  void start() {
    auto self = shared_from_this();
    asio::post(lane_.io, [self] {
      self->t_connect_ = clock_type::now();
      self->sock_.async_connect(self->ep_, [self](const boost::system::error_code& ec) {
        if (ec) return self->fail("connect: " + ec.message());
        self->sock_.set_option(tcp::no_delay(true));
        // fan-out ends when the kernel received a transcript (read_at_ns_); through TLS, when it was decrypted
        if (!self->tls_context_) self->sock_.stamp_receipts();
        if (self->sndbuf_ > 0) self->sock_.set_option(asio::socket_base::send_buffer_size(self->sndbuf_));
        self->sock_.non_blocking(true);  // frames are written at once when the socket takes them
        if (!self->tls_context_) return self->upgrade();
        self->tls_ = std::make_unique<tls_stream>(self->sock_, *self->tls_context_);
        if (!SSL_set_tlsext_host_name(self->tls_->native_handle(), self->tls_name_.c_str()))
          return self->fail("TLS: cannot set the SNI host name " + self->tls_name_);
        self->tls_->set_verify_callback(asio::ssl::host_name_verification(self->tls_name_));
        self->tls_->async_handshake(asio::ssl::stream_base::client, [self](const boost::system::error_code& ec2) {
          if (ec2) return self->fail("TLS handshake: " + ec2.message());
          self->upgrade();
        });
      });
    });
  }

  // From the owner: stream from now on, on the lane's schedule.
  void begin_streaming() {
    auto self = shared_from_this();
    asio::post(lane_.io, [self] {
      if (self->closed_) return;
      self->streaming_ = true;
      self->lane_.join(self);
    });
  }

  // The lane's tick reached this connection's slot at `due` (the first time: its schedule starts there). False
  // once it no longer streams (the lane forgets it).
  bool on_due(clock_type::time_point due) {
    if (!streaming_) return false;
    if (!started_) {
      started_ = true;
      start_ = due;
    }
    // the tool's own health: how late its schedule reached this frame (a socket the server does not drain makes
    // frames wait after this, and that wait is the server's: it shows in the relay latency)
    const double late_us = std::chrono::duration<double, std::micro>(clock_type::now() - due).count();
    lane_.lag.add_us(late_us);
    if (live_.in_window(ns_of(due))) lane_.lag_steady.add_us(late_us);
    ++due_;
    pump();
    return streaming_;
  }

  // From the owner: no more audio; ask the server to drain (`stop`).
  void send_stop() {
    auto self = shared_from_this();
    asio::post(lane_.io, [self] {
      self->streaming_ = false;
      self->due_ = 0;
      self->stop_sent_ = true;
      if (self->egress_) {
        // as LiveKit's egress ends: a close frame without a status; the server drains and answers it
        self->got_stopped_ = true;
        self->queue_control(0x8, "");
      } else {
        self->queue_control(0x1, R"({"type":"stop"})");
      }
    });
  }

  // From the owner, against a bare receiver: stop sending and end the connection; that is a clean end there.
  void end_quietly() {
    auto self = shared_from_this();
    asio::post(lane_.io, [self] {
      self->streaming_ = false;
      self->stop_sent_ = self->got_stopped_ = true;
      self->finish(1000, false);
      boost::system::error_code ec;
      self->sock_.close(ec);
      self->sock_closed_ = true;
    });
  }

  void abort(std::string why) {
    auto self = shared_from_this();
    asio::post(lane_.io, [self, why] { self->fail(why); });
  }

private:
  using tls_stream = asio::ssl::stream<tcp::socket&>;

  // Calls f with what this connection reads and writes through: the TLS stream, or the socket itself.
  template <class F>
  void with_stream(F&& f) {
    if (tls_) {
      f(*tls_);
    } else {
      f(sock_);
    }
  }

  void upgrade() {
    request_ = "GET " + target_ + " HTTP/1.1\r\nHost: " + host_ +
               "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
               "bG9hZGdlbi1jbGllbnQxMg==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    auto self = shared_from_this();
    with_stream([&](auto& stream) {
      asio::async_write(stream, asio::buffer(request_), [self](const boost::system::error_code& ec, std::size_t) {
        if (ec) return self->fail("handshake: " + ec.message());
        self->read_head();
      });
    });
  }

  void read_head() {
    with_stream([&](auto& stream) { read_head(stream); });
  }

  template <class Stream>
  void read_head(Stream& stream) {
    auto self = shared_from_this();
    asio::async_read_until(stream, head_, "\r\n\r\n", [self](const boost::system::error_code& ec, std::size_t n) {
      if (ec) return self->fail("handshake: " + ec.message());
      std::string head(asio::buffers_begin(self->head_.data()), asio::buffers_begin(self->head_.data()) + n);
      self->head_.consume(n);
      unsigned status = 0;
      if (head.size() > 12) status = static_cast<unsigned>(std::atoi(head.c_str() + 9));
      if (status != 101) return self->read_rejection(status, head);
      self->result.connected = true;
      self->result.connect_ms = std::chrono::duration<double, std::milli>(clock_type::now() - self->t_connect_).count();
      self->lane_.connect.add_us(self->result.connect_ms * 1000);
      // what came after the head is the first frames
      self->in_.assign(asio::buffers_begin(self->head_.data()), asio::buffers_end(self->head_.data()));
      self->head_.consume(self->head_.size());
      caf::anon_send(self->owner_, opened_atom::value);
      self->parse();
      self->read();
    });
  }

  void read_rejection(unsigned status, const std::string& head) {
    result.rejected_status = status;
    std::size_t length = 0;
    for (const char* name : {"Content-Length: ", "content-length: "})
      if (auto p = head.find(name); p != std::string::npos) length = std::strtoul(head.c_str() + p + 16, nullptr, 10);
    length = std::min<std::size_t>(length, 64 * 1024);
    auto self = shared_from_this();
    const std::size_t have = head_.size();
    if (have >= length) {
      result.rejected_body.assign(asio::buffers_begin(head_.data()), asio::buffers_begin(head_.data()) + length);
      return finish(0, false);
    }
    with_stream([&](auto& stream) {
      asio::async_read(stream, head_, asio::transfer_exactly(length - have),
                       [self, length](const boost::system::error_code&, std::size_t) {
                         auto& b = self->head_;
                         self->result.rejected_body.assign(asio::buffers_begin(b.data()),
                                                           asio::buffers_begin(b.data()) + std::min(length, b.size()));
                         self->finish(0, false);
                       });
    });
  }

  void read() {
    with_stream([&](auto& stream) { read(stream); });
  }

  template <class Stream>
  void read(Stream& stream) {
    auto self = shared_from_this();
    stream.async_read_some(asio::buffer(rbuf_), [self](const boost::system::error_code& ec, std::size_t n) {
      if (ec) {
        if (!self->closed_) self->finish(1006, true, "connection lost: " + ec.message());
        return;
      }
      self->in_.append(self->rbuf_, n);
      // When the kernel received what this read took (the last of it), not when this lane got to it: the lane's
      // queueing on the tool's core is not the server's fan-out latency. Through TLS: when it was decrypted.
      const auto now = monotonic_ns();
      const auto received = self->tls_ ? 0 : self->sock_.receipt_realtime_ns();
      self->read_at_ns_ = received ? monotonic_of_realtime_ns(received) : now;
      if (received) self->lane_.read_delay.add_ns(std::max<std::int64_t>(0, now - self->read_at_ns_));
      self->parse();
      if (!self->closed_) self->read();
    });
  }

  // Complete server frames in in_ (unmasked; this tool never sends fragments and the server never does either).
  void parse() {
    std::size_t at = 0;
    while (in_.size() - at >= 2 && !closed_) {
      auto b0 = static_cast<std::uint8_t>(in_[at]), b1 = static_cast<std::uint8_t>(in_[at + 1]);
      std::size_t len = b1 & 0x7f, head = 2;
      if (len == 126) {
        if (in_.size() - at < 4) break;
        len = get_be(at + 2, 2);
        head = 4;
      } else if (len == 127) {
        if (in_.size() - at < 10) break;
        len = get_be(at + 2, 8);
        head = 10;
      }
      if (in_.size() - at < head + len) break;
      on_frame(b0 & 0x0f, in_.substr(at + head, len));
      at += head + len;
    }
    in_.erase(0, at);
  }

  std::size_t get_be(std::size_t at, int n) const {
    std::size_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | static_cast<std::uint8_t>(in_[at + i]);
    return v;
  }

  void on_frame(int opcode, const std::string& payload) {
    if (opcode == 0x1) {
      on_text(payload);
    } else if (opcode == 0x9) {
      queue_control(0xA, payload);  // pong
    } else if (opcode == 0x8) {
      std::uint16_t code = 1005;
      if (payload.size() >= 2)
        code = static_cast<std::uint16_t>((static_cast<std::uint8_t>(payload[0]) << 8) |
                                          static_cast<std::uint8_t>(payload[1]));
      close_reason_ = payload.size() > 2 ? payload.substr(2) : "";
      // answer the close, then let the server end the TCP connection
      std::string echo;
      if (payload.size() >= 2) echo = payload.substr(0, 2);
      queue_control(0x8, echo);
      const bool clean_code = code == 1000 || (egress_ && code == 1005);
      finish(code, !(stop_sent_ && clean_code && got_stopped_), close_reason_);
    }
  }

  void on_text(const std::string& m) {
    const auto type = value_of(m, "type");
    if (type == "transcript_partial" || type == "transcript_final") {
      const bool final = type == "transcript_final";
      ++(final ? result.finals : result.partials);
      ++live_.transcripts;
      if (final && value_of(m, "utteranceId").find("-recovered-") != std::string::npos) {
        ++result.recovered;
        return;
      }
      auto text = value_of(m, "text");
      if (auto p = text.rfind(" @"); p != std::string::npos) {
        const auto stamp = std::strtoll(text.c_str() + p + 2, nullptr, 10);
        if (stamp > 0) {
          const auto took = std::max<std::int64_t>(0, read_at_ns_ - stamp);
          lane_.fanout.add_ns(took);
          if (live_.in_window(stamp)) lane_.fanout_steady.add_ns(took);
        }
      }
    } else if (type == "stt_status") {
      const auto status = value_of(m, "status");
      if (status == "stopped" && stop_sent_) got_stopped_ = true;
      if (status == "ready" && !ready_seen_) {  // the first: this participant's upstream is open
        ready_seen_ = true;
        caf::anon_send(owner_, ready_atom::value);
      }
    } else if (type == "error" || type == "warning") {
      ++result.error_codes[type + ":" + value_of(m, "code")];
      ++live_.errors;
    }
  }

  void queue_control(std::uint8_t opcode, const std::string& payload) {
    if (close_sent_) return;
    std::string f;
    f.push_back(static_cast<char>(0x80 | opcode));
    const std::size_t n = std::min<std::size_t>(payload.size(), 125);  // control frames and `stop` are short
    f.push_back(static_cast<char>(0x80 | n));
    for (auto k : mask_key) f.push_back(static_cast<char>(k));
    for (std::size_t i = 0; i < n; ++i) f.push_back(static_cast<char>(payload[i] ^ mask_key[i % 4]));
    if (opcode == 0x8) close_sent_ = true;
    control_.push_back(std::move(f));
    pump();
  }

  // One write at a time: control frames first, then the audio frames due. Written at once (non-blocking) when the
  // socket takes them whole; what it does not take goes asynchronously, and nothing else until it has.
  void pump() {
    while (!writing_ && !sock_closed_) {
      if (!control_.empty()) {
        std::string f = std::move(control_.front());
        control_.pop_front();
        const bool closing = static_cast<std::uint8_t>(f[0]) == 0x88;
        if (!send(std::array<asio::const_buffer, 1>{asio::buffer(f)}, closing)) return;
        if (closing) return close_socket_soon();
        continue;
      }
      if (!streaming_ || due_ == 0) return;
      --due_;
      const auto& a = *audio_;
      const std::size_t f = a.frame_bytes;
      const std::size_t k = sent_ % a.frames;
      const auto scheduled = start_ + period_ * static_cast<long>(sent_);
      // header: FIN + binary, masked, 16-bit length, the key; then the tag, masked now
      hdr_[0] = 0x82;
      hdr_[1] = 0x80 | 126;
      hdr_[2] = static_cast<std::uint8_t>(f >> 8);
      hdr_[3] = static_cast<std::uint8_t>(f & 0xff);
      std::memcpy(hdr_ + 4, mask_key, 4);
      // stamped with when it was due, so that a frame held back by a full socket counts its wait as relay latency
      const auto late = std::chrono::duration_cast<std::chrono::nanoseconds>(clock_type::now() - scheduled).count();
      write_load_tag(hdr_ + 8, {static_cast<std::uint16_t>(f), id_, static_cast<std::uint32_t>(sent_),
                                monotonic_ns() - std::max<std::int64_t>(0, late)});
      for (std::size_t i = 0; i < load_tag::size; ++i) hdr_[8 + i] ^= mask_key[i % 4];
      ++sent_;
      ++result.frames_sent;
      ++live_.frames_sent;
      iov_[0] = {hdr_, 8 + load_tag::size};
      iov_[1] = {const_cast<char*>(a.masked.data() + k * f + load_tag::size), f - load_tag::size};
      if (lane_.batching && !tls_) {
        msg_ = {};
        msg_.msg_iov = iov_;
        msg_.msg_iovlen = 2;
        if (lane_.queue(shared_from_this(), sock_.native_handle(), &msg_)) {
          writing_ = true;  // nothing else goes out until the submission says how this frame went
          return;
        }
      }
      if (!send(frame_buffers(), false)) {
        if (writing_ && !tls_) ++lane_.not_taken_whole;
        return;
      }
    }
  }

  // The tick's submission sent `res` bytes of the frame queued last (or failed with -errno).
  void on_sent(int res) {
    writing_ = false;
    if (sock_closed_) return;
    if (res == -EAGAIN || res == -EWOULDBLOCK) res = 0;
    if (res < 0) return finish(1006, !(stop_sent_ && got_stopped_), "write: " + std::system_category().message(-res));
    const auto bufs = frame_buffers();
    if (static_cast<std::size_t>(res) == asio::buffer_size(bufs)) return pump();
    ++lane_.not_taken_whole;
    keep_rest(bufs, static_cast<std::size_t>(res), false);
  }

  // Writes `bufs` now if the socket takes them; else keeps the rest and writes it asynchronously (writing_ set).
  // False when the caller must stop (writing in the background, or failed).
  template <class Buffers>
  bool send(const Buffers& bufs, bool closing) {
    if (tls_) {  // copied whole and written asynchronously: Asio's TLS stream makes a record of each buffer it is
                 // given, so the frame's header and audio given apart would be two records, each with its own overhead
      keep_rest(bufs, 0, closing);
      return false;
    }
    boost::system::error_code ec;
    const std::size_t total = asio::buffer_size(bufs);
    std::size_t n = sock_.write_some(bufs, ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      ec = {};
      n = 0;
    }
    if (ec) {
      finish(1006, !(closing || (stop_sent_ && got_stopped_)), "write: " + ec.message());
      return false;
    }
    if (n == total) return true;
    keep_rest(bufs, n, closing);
    return false;
  }

  // The frame being sent: its header and masked tag, then its pre-masked audio.
  std::array<asio::const_buffer, 2> frame_buffers() const {
    return {asio::buffer(iov_[0].iov_base, iov_[0].iov_len), asio::buffer(iov_[1].iov_base, iov_[1].iov_len)};
  }

  // The socket took only `n` bytes of `bufs`: the rest is copied and written asynchronously (writing_ set until
  // it is).
  template <class Buffers>
  void keep_rest(const Buffers& bufs, std::size_t n, bool closing) {
    pending_.clear();
    std::size_t skip = n;
    for (const auto& b : bufs) {
      const auto* p = static_cast<const char*>(b.data());
      const std::size_t len = b.size();
      if (skip >= len) {
        skip -= len;
        continue;
      }
      pending_.append(p + skip, len - skip);
      skip = 0;
    }
    writing_ = true;
    auto self = shared_from_this();
    with_stream([&](auto& stream) {
      asio::async_write(stream, asio::buffer(pending_),
                        [self, closing](const boost::system::error_code& e, std::size_t) {
                          self->writing_ = false;
                          if (e) return;
                          if (closing) return self->close_socket_soon();
                          self->pump();
                        });
    });
  }

  void close_socket_soon() {
    // the server closes the TCP connection after the close handshake; if it does not within 2 s, we do
    timer_.expires_after(std::chrono::seconds(2));
    auto self = shared_from_this();
    timer_.async_wait([self](const boost::system::error_code&) {
      boost::system::error_code ec;
      self->sock_.close(ec);
      self->sock_closed_ = true;
    });
  }

  void fail(const std::string& why) {
    if (closed_) return;
    result.failure = why;
    finish(0, true);
  }

  // The end of this participant's connection: reported once to the owner.
  void finish(std::uint16_t code, bool unexpected, const std::string& reason = {}) {
    if (closed_) return;
    closed_ = true;
    streaming_ = false;
    result.close_code = code;
    result.unexpected_close = unexpected && result.rejected_status == 0 && result.failure.empty();
    result.stopped_cleanly = stop_sent_ && got_stopped_ && (code == 1000 || (egress_ && code == 1005));
    if (!reason.empty() && result.failure.empty() && unexpected) result.failure = reason;
    if (code == 0 || code == 1006) {
      boost::system::error_code ec;
      sock_.close(ec);
      sock_closed_ = true;
    }
    caf::anon_send(owner_, closed_atom::value);
  }

  lane& lane_;
  // Reads to the edge: a read that comes back short waits for epoll, not for a second recvmsg that finds nothing
  // (Asio's reactor tries every read once before it waits; a transcript a read, that was two recvmsg each).
  net::edge_socket sock_;
  std::unique_ptr<tls_stream> tls_;  // wss: over sock_
  std::int64_t read_at_ns_ = 0;      // when the bytes of the latest read arrived (CLOCK_MONOTONIC)
  asio::steady_timer timer_;
  tcp::endpoint ep_;
  std::string target_, host_, request_;
  std::shared_ptr<const prepared_audio> audio_;
  std::uint32_t id_;
  std::chrono::milliseconds period_;
  caf::actor owner_;
  bool ready_seen_ = false;  // an `stt_status: ready` came
  live_figures& live_;
  asio::streambuf head_;
  char rbuf_[8192];
  std::string in_;
  std::deque<std::string> control_;
  std::string pending_, close_reason_;
  std::uint8_t hdr_[8 + load_tag::size] = {};
  iovec iov_[2] = {};  // the frame being sent (frame_buffers())
  msghdr msg_ = {};    // its sendmsg, while a tick's submission holds it
  clock_type::time_point t_connect_, start_;
  std::uint64_t sent_ = 0, due_ = 0;
  bool started_ = false, streaming_ = false, writing_ = false, stop_sent_ = false, got_stopped_ = false,
       closed_ = false, close_sent_ = false, sock_closed_ = false;
};

void lane::join(const std::shared_ptr<conn>& c) {
  if (!ticking) {
    ticking = true;
    start = clock_type::now();
    ticks = 0;
    tick();
  }
  slots[ticks % slots.size()].push_back(c);
}

void lane::tick() {
  // Every slot whose time has come, in order (a late tick catches up; the connections measure their lag).
  const auto now = clock_type::now();
  batching = ring.on();
  while (start + std::chrono::milliseconds(ticks) <= now) {
    const auto due = start + std::chrono::milliseconds(ticks);
    auto& slot = slots[ticks % slots.size()];
    std::size_t keep = 0;
    for (std::size_t i = 0; i < slot.size(); ++i)
      if (slot[i]->on_due(due)) slot[keep++] = std::move(slot[i]);
    slot.resize(keep);
    ++ticks;
  }
  flush();
  batching = false;
  timer.expires_at(start + std::chrono::milliseconds(ticks));
  timer.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) tick();
  });
}

bool lane::queue(const std::shared_ptr<conn>& c, int fd, const msghdr* m) {
  if (ring.full() && !flushing) flush();
  if (ring.full()) return false;
  ring.queue(fd, m, batch.size());
  batch.push_back(c);
  ++batched_frames;
  return true;
}

void lane::flush() {
  // A round: one submission of the frames queued. A connection with more frames due (a late tick catching up)
  // queues its next as it hears of the last, for the next round.
  flushing = true;
  while (ring.pending()) ring.submit([this](std::size_t i, int res) { batch[i]->on_sent(res); });
  batch.clear();
  flushing = false;
}

}  // namespace detail

namespace {

struct participant_state {
  std::shared_ptr<detail::conn> c;
  caf::actor driver;
};

// The steady window opens when the last participant has become live (connected, and its STT ready where the server
// says so: live_figures) and closes at the first stop or close; both are told to the upstream (settings::on_window).
void became_live(const settings& s, live_figures& live) {
  if (++live.ever_live != s.participants) return;
  std::int64_t none = live_figures::never;
  const auto now = monotonic_ns();
  if (live.window_from.compare_exchange_strong(none, now) && s.on_window) s.on_window(now, live_figures::never);
}

// `stopping`: the first participant stops now. Its last frame went at most a frame period ago and waits for the
// stop in a partial upstream chunk (the sender's choice of when to stop, not the relay's latency), so the window
// ends a frame period before.
void close_window(const settings& s, live_figures& live, bool stopping) {
  const auto from = live.window_from.load();
  if (from == live_figures::never) return;  // never opened: not every participant became live
  std::int64_t none = live_figures::never;
  const auto to = std::max(from, monotonic_ns() - (stopping ? std::chrono::nanoseconds(s.frame).count() : 0));
  if (live.window_to.compare_exchange_strong(none, to) && s.on_window) s.on_window(from, to);
}

// One simulated participant: connect, stream for the duration, stop, wait for the drain, report to the driver.
caf::behavior participant(caf::stateful_actor<participant_state>* self, std::shared_ptr<detail::conn> c,
                          caf::actor driver, const settings* s, live_figures* live) {
  self->state.c = std::move(c);
  self->state.driver = std::move(driver);
  ++live->connecting;
  self->state.c->set_owner(caf::actor_cast<caf::actor>(self));
  self->state.c->start();
  return {
      [=](opened_atom) {
        --live->connecting;
        ++live->connected;
        // an egress stream and a bare receiver are sent no status: connected is live
        if (s->egress || s->floor) became_live(*s, *live);
        self->state.c->begin_streaming();
        self->delayed_send(self, s->duration, stop_atom::value);
      },
      [=](ready_atom) { became_live(*s, *live); },
      [=](stop_atom) {
        close_window(*s, *live, true);
        if (s->floor) {
          self->state.c->end_quietly();
          return;
        }
        self->state.c->send_stop();
        self->delayed_send(self, s->stop_timeout, timeout_atom::value);
      },
      [=](timeout_atom) { self->state.c->abort("no stt_status stopped and close within the stop timeout"); },
      [=](closed_atom) {
        close_window(*s, *live, false);
        auto& r = self->state.c->result;
        if (r.connected)
          --live->connected;
        else
          --live->connecting;
        ++live->finished;
        if (!r.connected || r.unexpected_close || !r.failure.empty()) ++live->failed;
        self->send(self->state.driver, done_atom::value, self->state.c);
        self->quit();
      },
  };
}

std::shared_ptr<const prepared_audio> prepare(const settings& s) {
  auto p = std::make_shared<prepared_audio>();
  std::vector<std::int16_t> mono = s.audio.empty() ? synthetic_voice(10) : s.audio;
  std::string raw;
  if (s.egress) {  // 48 kHz stereo: each sample three times (a crude upsampling: load, not quality), both channels
    raw.reserve(mono.size() * 12);
    for (auto v : mono)
      for (int r = 0; r < 6; ++r) {
        raw.push_back(static_cast<char>(static_cast<std::uint16_t>(v) & 0xff));
        raw.push_back(static_cast<char>(static_cast<std::uint16_t>(v) >> 8));
      }
    p->frame_bytes = static_cast<std::size_t>(s.frame.count()) * 192;
  } else {
    raw.assign(reinterpret_cast<const char*>(mono.data()), mono.size() * 2);
    p->frame_bytes = static_cast<std::size_t>(s.frame.count()) * 32;
  }
  p->frames = std::max<std::size_t>(1, raw.size() / p->frame_bytes);
  raw.resize(p->frames * p->frame_bytes, '\0');
  for (std::size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<char>(raw[i] ^ mask_key[i % 4]);
  p->masked = std::move(raw);
  return p;
}

}  // namespace

std::vector<std::int16_t> synthetic_voice(double seconds) {
  const std::size_t n = static_cast<std::size_t>(seconds * 16'000);
  std::vector<std::int16_t> out(n);
  double phase = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double t = static_cast<double>(i) / 16'000;
    const double pitch = 120 + 40 * std::sin(2 * M_PI * 0.7 * t);                                   // a gliding voice
    const double env = 0.55 + 0.45 * std::sin(2 * M_PI * 3.1 * t) * std::sin(2 * M_PI * 0.23 * t);  // syllables
    phase += 2 * M_PI * pitch / 16'000;
    double v = 0;
    for (int h = 1; h <= 6; ++h) v += std::sin(h * phase) / h;
    out[i] = static_cast<std::int16_t>(std::lrint(5'000 * env * v));
  }
  return out;
}

run_result run(const settings& s, live_figures& live, const std::function<void()>& tick) {
  auto audio = prepare(s);
  std::vector<std::unique_ptr<detail::lane>> lanes;
  for (int i = 0; i < std::max(1, s.io_threads); ++i)
    lanes.push_back(std::make_unique<detail::lane>(s.frame, s.batch_sends));
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work;
  for (auto& l : lanes) {
    work.emplace_back(l->io.get_executor());
    l->thread = std::thread([p = l.get()] {
      pthread_setname_np(pthread_self(), "loadgen.lane");  // what `top -H` shows for the thread that sends
      p->io.run();
    });
  }
  std::shared_ptr<asio::ssl::context> tls;
  if (s.tls) {
    std::string error;
    tls = net::client_tls_context(s.ca_file, error);
    if (!tls) throw std::runtime_error(error);
  }
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", static_cast<std::size_t>(std::max(1, s.actor_threads)));
  caf::actor_system sys{cfg};
  tcp::resolver resolver(lanes[0]->io);
  auto endpoints = resolver.resolve(s.host, std::to_string(s.port));
  const tcp::endpoint ep = *endpoints.begin();
  const std::string host = s.host + ":" + std::to_string(s.port);
  run_result out;
  caf::scoped_actor driver{sys};
  const auto t0 = clock_type::now();
  auto next_tick = t0 + std::chrono::seconds(1);
  std::vector<std::shared_ptr<detail::conn>> done;
  auto collect = [&](clock_type::time_point until) {
    for (;;) {
      const auto now = clock_type::now();
      if (now >= next_tick) {
        tick();
        next_tick += std::chrono::seconds(1);
      }
      const auto wait = std::min(until, next_tick) - clock_type::now();
      if (wait <= clock_type::duration::zero()) return;
      driver->receive(
          [&](done_atom, std::shared_ptr<detail::conn> c) { done.push_back(std::move(c)); },
          caf::after(std::chrono::duration_cast<std::chrono::milliseconds>(wait) + std::chrono::milliseconds(1)) >>
              [] {});
      if (static_cast<int>(done.size()) == s.participants) return;
    }
  };
  for (int i = 0; i < s.participants; ++i) {
    collect(t0 + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(i / s.ramp_per_s)));
    std::string token;
    const int room = i / std::max(1, s.room_size);
    const std::string slug = s.room_prefix + "-" + std::to_string(room);
    if (!s.tokens.empty()) {
      token = s.tokens[static_cast<std::size_t>(i) % s.tokens.size()];
    } else {
      token_claims c;
      c.session_slug = slug;
      c.identity = "p" + std::to_string(i);
      c.name = "Participant " + std::to_string(i);
      c.session_id = "vs-" + slug;
      if (s.egress) c.track_id = "TR_p" + std::to_string(i);
      token = mint_token(c, s.secret, static_cast<std::int64_t>(std::time(nullptr)) + 86'400);
    }
    const std::string target = std::string(s.egress ? "/egress/audio" : "/api/realtime/transcribe") + "?token=" + token;
    auto c = std::make_shared<detail::conn>(*lanes[static_cast<std::size_t>(i) % lanes.size()], ep, target, host, audio,
                                            static_cast<std::uint32_t>(i), s.frame, live);
    c->egress_ = s.egress;
    c->sndbuf_ = s.sndbuf;
    c->tls_context_ = tls;
    c->tls_name_ = s.host;
    sys.spawn(participant, c, caf::actor_cast<caf::actor>(driver), &s, &live);
  }
  const auto deadline = clock_type::now() + s.duration + s.stop_timeout + std::chrono::seconds(60);
  while (static_cast<int>(done.size()) < s.participants && clock_type::now() < deadline) collect(deadline);
  out.wall_s = std::chrono::duration<double>(clock_type::now() - t0).count();
  for (auto& c : done) out.participants.push_back(c->result);
  for (int i = static_cast<int>(done.size()); i < s.participants; ++i) {
    participant_result r;
    r.failure = "never finished";
    out.participants.push_back(r);
  }
  for (auto& l : lanes) {
    asio::post(l->io, [p = l.get()] {
      p->timer.cancel();
      for (auto& slot : p->slots) slot.clear();
    });
  }
  work.clear();
  for (auto& l : lanes) {
    l->io.stop();
    l->thread.join();
    out.lag.merge(l->lag);
    out.lag_steady.merge(l->lag_steady);
    out.fanout.merge(l->fanout);
    out.fanout_steady.merge(l->fanout_steady);
    out.read_delay.merge(l->read_delay);
    out.connect.merge(l->connect);
    out.batch_submissions += l->ring.submissions;
    out.batched_frames += l->batched_frames;
    out.not_taken_whole += l->not_taken_whole;
  }
  out.io_uring = !s.tls && std::all_of(lanes.begin(), lanes.end(), [](const auto& l) { return l->ring.on(); });
  return out;
}

}  // namespace sw::load
