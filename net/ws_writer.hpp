// Internal to net/: the one outgoing-message queue of a WebSocket, for the server's client sockets and the
// upstream sockets alike. Strictly one write at a time (the next starts in the completion of the previous one:
// that is what keeps frames whole), and the buffer of the write in flight is owned by that write's completion
// handler, so a connection that goes away mid-write never frees memory the socket is still sending from.
// Everything runs on the connection's strand.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>

#include <boost/asio/steady_timer.hpp>
#include <boost/circular_buffer.hpp>

#include "net/beast_util.hpp"

namespace sw::net {

// `close` is never queued: close_when_done() asks for it, and `written` reports it.
enum class frame_kind : std::uint8_t { text, binary, ping, pong, close };

struct ws_frame {
  frame_kind kind = frame_kind::text;
  std::shared_ptr<const std::string> data;  // a ping's or pong's payload, or null
  // Message bytes (what queued_bytes() counts): a control frame's payload is not.
  std::size_t size() const { return data && kind <= frame_kind::binary ? data->size() : 0; }
};

// WS: net/server_websocket.hpp's or net/client_websocket.hpp's (the same calls). The messages of one kind (text or
// binary) waiting at the front of the queue go in one write, at most gather_bytes of them (one larger goes alone): a
// backlog (a relay's audio after a reconnect, a client's transcripts, on a busy server) goes in one system call and one
// completion, not one of each per message, so a busy I/O thread writes all that waits each time it comes round. Control
// frames go alone, in their place.
template <class WS>
class ws_writer {
public:
  // `written` runs after each write (every queued frame, and the close frame: kind close), on the strand;
  // `write_timeout` > 0 closes the socket when one write takes longer (a peer that stopped reading).
  ws_writer(WS& ws, std::function<void(beast::error_code, const ws_frame&)> written,
            std::chrono::milliseconds write_timeout = std::chrono::milliseconds(0))
      : ws_(ws), written_(std::move(written)), write_timeout_(write_timeout), timer_(ws.get_executor()) {}

  std::size_t queued_bytes() const { return bytes_; }  // waiting and in flight
  std::size_t queued_frames() const { return queue_.size(); }
  std::size_t in_flight_bytes() const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < in_flight_ && i < queue_.size(); ++i) n += queue_[i].size();
    return n;
  }
  static constexpr std::size_t gather_bytes = 64 * 1024;
  bool writing() const { return writing_; }
  bool idle() const { return !writing_ && queue_.empty(); }
  bool closing() const { return close_ != nullptr; }

  void push(ws_frame f) {
    if (stopped_ || close_) return;
    bytes_ += f.size();
    queue_.push_back(std::move(f));
  }

  // Forgets what waits behind the write in flight (never the buffer of that write).
  void drop_waiting() {
    while (queue_.size() > in_flight_) {
      bytes_ -= queue_.back().size();
      queue_.pop_back();
    }
  }

  // After everything queued so far: the close handshake. Nothing is queued after it.
  void close_when_done(websocket::close_reason reason) {
    if (!close_) close_ = std::make_unique<websocket::close_reason>(std::move(reason));
  }

  // The connection is gone: nothing more is written; the write in flight completes (with an error) on its own.
  void stop() {
    stopped_ = true;
    drop_waiting();
    if (timer_armed_) timer_.cancel();
  }

  // Starts the next write unless one is in flight. `keep` keeps the connection object (which owns the stream
  // and this writer) alive until the write completes.
  void pump(std::shared_ptr<void> keep) {
    if (writing_ || stopped_ || close_started_) return;
    if (queue_.empty()) {
      if (close_) {
        close_started_ = true;
        writing_ = true;  // the close frame, bounded like a write
        started_ = std::chrono::steady_clock::now();
        arm_timer(write_timeout_);
        ws_.async_close(*close_, [this, keep](beast::error_code ec) {
          writing_ = false;
          if (timed_out_ && !ec) ec = beast::error::timeout;
          if (written_) written_(ec, ws_frame{frame_kind::close, nullptr});
        });
      }
      return;
    }
    writing_ = true;
    in_flight_ = 1;
    started_ = std::chrono::steady_clock::now();
    arm_timer(write_timeout_);
    const ws_frame& f = queue_.front();
    if (f.kind == frame_kind::ping || f.kind == frame_kind::pong) {
      websocket::ping_data payload;
      if (f.data) payload.assign(f.data->data(), std::min(f.data->size(), payload.max_size()));
      auto then = [this, keep](beast::error_code ec) { done(ec, keep); };
      if (f.kind == frame_kind::ping) {
        ws_.async_ping(payload, std::move(then));
      } else {
        ws_.async_pong(payload, std::move(then));
      }
      return;
    }
    std::size_t count = 0, bytes = 0;
    while (count < queue_.size() && count < max_gathered && queue_[count].kind == f.kind &&
           bytes + queue_[count].size() <= gather_bytes)
      bytes += queue_[count++].size();
    if (count > 1) {
      std::array<std::shared_ptr<const std::string>, max_gathered> messages;
      for (std::size_t i = 0; i < count; ++i) messages[i] = queue_[i].data;
      in_flight_ = count;
      // copied (a client masks them) into a buffer of the write's own: the messages are not needed after this call
      ws_.async_write_many(f.kind == frame_kind::text, messages.data(), count,
                           [this, keep](beast::error_code ec, std::size_t) { done(ec, keep); });
      return;
    }
    ws_.text(f.kind == frame_kind::text);
    // The completion handler holds the buffer: it outlives the queue entry whatever happens to the queue.
    ws_.async_write(asio::buffer(*f.data),
                    [this, keep, hold = f.data](beast::error_code ec, std::size_t) { done(ec, keep); });
  }

private:
  // One timer per connection, not one per write: it wakes at most once per timeout while writes go on, and
  // closes the socket when the write in flight is older than the timeout (a peer that stopped reading).
  void arm_timer(std::chrono::steady_clock::duration wait) {
    if (write_timeout_.count() <= 0 || timer_armed_) return;
    timer_armed_ = true;
    timer_.expires_after(wait);
    timer_.async_wait([this](beast::error_code ec) {
      if (ec) return;  // cancelled (the connection is gone): `this` may be too
      timer_armed_ = false;
      if (stopped_ || !writing_) return;  // the next write arms it again
      auto age = std::chrono::steady_clock::now() - started_;
      if (age < write_timeout_) {
        arm_timer(write_timeout_ - age);
        return;
      }
      timed_out_ = true;
      beast::error_code ignored;
      raw_socket(beast::get_lowest_layer(ws_)).close(ignored);  // the pending read reports the end
    });
  }

  void done(beast::error_code ec, const std::shared_ptr<void>& keep) {
    writing_ = false;
    if (timed_out_ && !ec) ec = beast::error::timeout;
    const auto count = in_flight_;
    in_flight_ = 0;
    if (count == 1) {
      ws_frame f = std::move(queue_.front());
      queue_.pop_front();
      bytes_ -= f.size();
      if (written_) written_(ec, f);
    } else {  // every message of the write leaves the queue before anyone hears of one
      std::array<ws_frame, max_gathered> frames;
      for (std::size_t i = 0; i < count; ++i) {
        frames[i] = std::move(queue_.front());
        queue_.pop_front();
        bytes_ -= frames[i].size();
      }
      for (std::size_t i = 0; i < count && written_; ++i) written_(ec, frames[i]);
    }
    if (ec) {
      stopped_ = true;
      beast::error_code ignored;
      raw_socket(beast::get_lowest_layer(ws_)).close(ignored);  // the read side reports the end
      return;
    }
    pump(keep);
  }

  WS& ws_;
  std::function<void(beast::error_code, const ws_frame&)> written_;
  std::chrono::milliseconds write_timeout_;
  asio::steady_timer timer_;
  // Usually one frame or none waits: a ring that holds room for one (24 bytes) and grows and shrinks with the queue,
  // not a deque's map and block (260 bytes once used) for every connection. Unbounded here: the owner bounds
  // queued_bytes().
  boost::circular_buffer_space_optimized<ws_frame> queue_{
      boost::circular_buffer_space_optimized<ws_frame>::capacity_type(
          std::numeric_limits<std::size_t>::max() / sizeof(ws_frame), 1)};
  std::size_t bytes_ = 0;
  static constexpr std::size_t max_gathered = 32;
  std::size_t in_flight_ = 0;  // queued messages the write in flight carries (0: none, or the close frame)
  std::unique_ptr<websocket::close_reason> close_;  // asked for (a close reason is 130 bytes: none until then)
  std::chrono::steady_clock::time_point started_;   // of the write in flight
  bool writing_ = false, stopped_ = false, close_started_ = false, timed_out_ = false, timer_armed_ = false;
};

}  // namespace sw::net
