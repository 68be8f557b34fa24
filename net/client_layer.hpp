// Internal to net/: the pass-through stream layer under a server WebSocket, where every byte of the client's passes.
//
// Reading, it counts the client's WebSocket frames, all of them: data, continuation and control. Empty continuation
// frames and pings reach no handler of the session's as messages, so it would not see a client that sends nothing
// else (each costs the server a frame parse, a ping a write too). Past a budget (`limit_frames`: a
// rate, and 4 s of it at once) it says so once (the session closes the client) and reads no faster than the rate
// from then on, so a flooding client costs the server no more than the rate while its close completes.
//
// Holding a chunk in the kernel (plain TCP only). A relay sends audio upstream in chunks of several frames, so a
// frame that does not complete a chunk needs no wake-up of its own. While audio flows, the session says where its next
// chunk ends (hold_until) and the socket's SO_RCVLOWAT is set to the audio bytes still missing: the kernel keeps the
// frames and wakes the read once the chunk's last frame is in (one wake-up, one `recvmsg`, one epoll event a chunk
// instead of one a frame; the sender's `sendmsg` skips the wake-up too). What is missing is counted in payload bytes
// (headers only add), from the bytes already read, a frame read in part included, so the wake-up never comes after
// the chunk's last frame. Whatever else the client sends meanwhile (a text message, a pong) waits with the audio, for
// at most the rest of the chunk; when the audio pauses, the pause watch releases it (release).
//
// Everything else is forwarded untouched.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>

#include <sys/ioctl.h>
#include <sys/socket.h>

#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "net/edge_socket.hpp"
#include "net/token_bucket.hpp"

namespace sw::net {

// Counts the WebSocket frames in a byte stream by walking their headers (the payloads are skipped, never read), and
// the payload bytes of binary messages among them (continuation frames of a binary message included).
class frame_counter {
public:
  // The frames whose header ends within these bytes, the next in the stream.
  std::uint64_t count(const std::uint8_t* p, std::size_t n) {
    std::uint64_t frames = 0;
    while (n > 0) {
      if (skip_ > 0) {
        const auto k = static_cast<std::size_t>(std::min<std::uint64_t>(skip_, n));
        skip_ -= k;
        if (binary_) binary_bytes_ += k;
        p += k;
        n -= k;
        continue;
      }
      head_[have_++] = *p++;
      --n;
      if (have_ < 2) continue;
      const unsigned len7 = head_[1] & 0x7f;
      const std::size_t need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((head_[1] & 0x80) ? 4 : 0);
      if (have_ < need) continue;
      std::uint64_t len = len7;
      if (len7 >= 126) {
        len = 0;
        for (std::size_t i = 2; i < (len7 == 126 ? 4u : 10u); ++i) len = (len << 8) | head_[i];
      }
      skip_ = len;
      have_ = 0;
      ++frames;
      const unsigned opcode = head_[0] & 0x0f;
      if (opcode == 0x1 || opcode == 0x2) binary_message_ = opcode == 0x2;  // a data message begins
      binary_ = opcode == 0x2 || (opcode == 0x0 && binary_message_);
    }
    return frames;
  }

  // Payload bytes of binary messages so far.
  std::uint64_t binary_bytes() const { return binary_bytes_; }

private:
  std::uint64_t binary_bytes_ = 0;
  bool binary_ = false;          // the current frame's payload is binary data
  bool binary_message_ = false;  // the data message in progress is binary (its continuation frames are too)
  std::uint64_t skip_ = 0;       // payload bytes of the current frame still to come
  std::array<std::uint8_t, 14> head_{};
  std::size_t have_ = 0;  // bytes of the next frame's header so far
};

// The frame budget takes this many seconds of its rate at once.
inline constexpr double frame_burst_seconds = 4;

template <class Next>
class client_layer {
public:
  using next_layer_type = Next;
  using executor_type = typename Next::executor_type;
  using clock = token_bucket::clock;

  explicit client_layer(Next&& next) : next_(std::move(next)), pace_(next_.get_executor()) {}

  executor_type get_executor() noexcept { return next_.get_executor(); }
  Next& next_layer() noexcept { return next_; }
  const Next& next_layer() const noexcept { return next_; }

  // At most `per_second` frames a second, frame_burst_seconds of it at once; past that `on_excess` is called (once) and
  // reads are paced to the rate. 0: no limit.
  void limit_frames(double per_second, std::function<void()> on_excess) {
    if (per_second > 0) budget_.emplace(frame_burst_seconds * per_second, per_second, clock::now());
    on_excess_ = std::move(on_excess);
  }
  // No more pacing: a read waiting for its turn goes now (the socket is being closed).
  void stop_pacing() {
    budget_.reset();
    pace_.cancel();
  }

  // Every read that returns bytes is counted here (a server-wide figure).
  void count_reads(std::atomic<std::uint64_t>* reads) { reads_ = reads; }

  // From now on binary payload bytes are counted, so that chunks can be held in the kernel (see the top); plain TCP
  // only (a TLS record's bytes are not the client's). False where it cannot be.
  bool track_audio() {
    if constexpr (std::is_base_of_v<boost::asio::ip::tcp::socket, Next>) tracking_ = true;
    return tracking_;
  }

  // The session's next chunk ends once `boundary` binary payload bytes have been read from this socket (counted from
  // the start of the stream); `frame` is the size of the latest audio frame. Reads from now on need not wake for less
  // than what is missing, unless the next frame alone completes the chunk (then holding saves nothing). 0: hold
  // nothing. Takes effect when the next read starts.
  void hold_until(std::uint64_t boundary, std::size_t frame) {
    boundary_ = boundary;
    audio_frame_ = frame;
  }

  // Holds a chunk back now (its lowest mark is above one byte).
  bool holding() const { return lowat_ > 1; }

  // Bytes the kernel holds for this socket, unread.
  std::size_t queued() {
    int n = 0;
    if constexpr (std::is_base_of_v<boost::asio::ip::tcp::socket, Next>)
      if (::ioctl(next_.native_handle(), FIONREAD, &n) != 0) n = 0;
    return n > 0 ? static_cast<std::size_t>(n) : 0;
  }

  // Holds nothing from now on: the read in flight wakes for any byte (at once, if some wait), and so does every read
  // until hold_until is called again. Once `waiting` more bytes have been read and the next read starts, `drained`
  // runs (there, before it: every byte that waited has gone up to the WebSocket layer above).
  void release(std::size_t waiting = 0, std::function<void()> drained = nullptr) {
    boundary_ = 0;
    if (drained) {
      drained_ = std::move(drained);
      drained_after_ = bytes_read_ + waiting;
    }
    set_lowat(1);
  }

  // No more holding for this connection (it is closing: its close frame must not wait).
  void stop_tracking() {
    release();
    drained_ = nullptr;
    tracking_ = false;
  }

  // Bytes the client sent behind its upgrade request, before our answer (read with the request): the first reads take
  // them, counted as if read from the socket now. RFC 6455 §4.1 asks a client to wait for the answer; Node's `ws`,
  // which the old service ran, keeps what came early, and so do we. Before the first read only.
  void preload(const std::uint8_t* bytes, std::size_t n) {
    if (n == 0) return;
    ahead_.data.reset(new std::uint8_t[n]);
    std::memcpy(ahead_.data.get(), bytes, n);
    ahead_.size = n;
    ahead_.at = 0;
    bytes_read_ += n;
    charge(counter_.count(bytes, n));
  }

  template <class Buffers, class Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, const Buffers& b) {
          if (!budget_ || budget_->tokens() >= 0) {
            read(b, std::move(handler));
            return;
          }
          // In debt: the read waits until the rate has paid it back.
          auto ex = boost::asio::get_associated_executor(handler, next_.get_executor());
          pace_.expires_after(budget_->debt_wait());
          pace_.async_wait(boost::asio::bind_executor(
              ex, [this, b, h = std::move(handler)](boost::system::error_code) mutable { read(b, std::move(h)); }));
        },
        token, buffers);
  }

  template <class Buffers, class Token>
  auto async_write_some(const Buffers& buffers, Token&& token) {
    return next_.async_write_some(buffers, std::forward<Token>(token));
  }

private:
  template <class Buffers, class Handler>
  void read(const Buffers& b, Handler&& handler) {
    if (ahead_.available() > 0) {
      // What the last read took beyond the buffer it was given, or what came with the upgrade (counted then): no
      // socket read.
      ahead_.serve(b, std::forward<Handler>(handler), next_.get_executor());
      return;
    }
    if (tracking_) before_read();
    auto ex = boost::asio::get_associated_executor(handler, next_.get_executor());
    auto done = boost::asio::bind_executor(
        ex, [this, b, h = std::forward<Handler>(handler)](boost::system::error_code ec, std::size_t n) mutable {
          if (n > 0) spend(b, n);
          std::move(h)(ec, n);
        });
    if constexpr (std::is_base_of_v<edge_socket, Next>) {
      // A held chunk comes whole: the read takes all of it, whatever room the buffer given has.
      if (tracking_) return next_.async_read_some_ahead(b, ahead_, std::move(done));
    }
    next_.async_read_some(b, std::move(done));
  }

  // A read starts: what waited after a release has been read up to the layer above (tell it), and the lowest mark is
  // set to what the session's chunk still misses.
  void before_read() {
    if (drained_ && bytes_read_ >= drained_after_) {
      auto f = std::move(drained_);
      drained_ = nullptr;
      f();  // may hold again
    }
    std::uint64_t lowat = 1;
    const auto have = counter_.binary_bytes();
    if (!drained_ && boundary_ > have && boundary_ - have > audio_frame_)
      lowat = std::min<std::uint64_t>(boundary_ - have, INT_MAX);
    set_lowat(static_cast<int>(lowat));
  }

  void set_lowat(int lowat) {
    if constexpr (std::is_base_of_v<boost::asio::ip::tcp::socket, Next>) {
      if (lowat == lowat_ || !tracking_) return;
      // Lowering it wakes a read in flight when bytes wait (the kernel checks the new mark at once).
      if (::setsockopt(next_.native_handle(), SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat) != 0) {
        tracking_ = false;  // not this socket: it reads every frame, as before
        return;
      }
      lowat_ = lowat;
    }
  }

  // A socket read brought `n` bytes into `b` (and, for a read ahead, what is in ahead_ after them).
  template <class Buffers>
  void spend(const Buffers& b, std::size_t n) {
    bytes_read_ += n;
    if (reads_) reads_->fetch_add(1, std::memory_order_relaxed);
    std::uint64_t frames = 0;
    for (auto it = boost::asio::buffer_sequence_begin(b); it != boost::asio::buffer_sequence_end(b) && n > 0; ++it) {
      const boost::asio::const_buffer piece = *it;
      const auto k = std::min(n, piece.size());
      frames += counter_.count(static_cast<const std::uint8_t*>(piece.data()), k);
      n -= k;
    }
    if (ahead_.available() > 0) {
      bytes_read_ += ahead_.available();
      frames += counter_.count(ahead_.data.get() + ahead_.at, ahead_.available());
    }
    charge(frames);
  }

  // `frames` more came: from the budget.
  void charge(std::uint64_t frames) {
    if (frames == 0 || !budget_) return;
    budget_->spend(static_cast<double>(frames), clock::now());
    if (budget_->tokens() < 0 && on_excess_) {
      auto f = std::move(on_excess_);
      on_excess_ = nullptr;
      f();
    }
  }

  Next next_;
  frame_counter counter_;
  std::optional<token_bucket> budget_;  // frames; none: no limit
  std::function<void()> on_excess_;
  boost::asio::steady_timer pace_;
  std::atomic<std::uint64_t>* reads_ = nullptr;
  read_ahead ahead_;  // bytes a read took beyond the buffer it was given (plain sockets holding chunks), or preloaded
  std::uint64_t bytes_read_ = 0;
  // holding chunks in the kernel
  bool tracking_ = false;
  int lowat_ = 1;  // the socket's SO_RCVLOWAT
  std::uint64_t boundary_ = 0;
  std::size_t audio_frame_ = 0;
  std::function<void()> drained_;
  std::uint64_t drained_after_ = 0;
};

}  // namespace sw::net
