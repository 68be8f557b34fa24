// Internal to net/: what both ends of our WebSockets share (server_websocket.hpp for the clients' connections,
// client_websocket.hpp for the upstream ones): the stream each owns, the kind of data frame it writes next, and the
// control frames net/ws_writer.hpp asks for. `End` builds each frame its own way (a client masks it) in its
// write_frame(opcode, data, size, done(error_code, payload bytes)), usually into a buffer handed to write_owned.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include <boost/asio/write.hpp>

#include "net/beast_util.hpp"
#include "proto/ws_frame.hpp"

namespace sw::net {

template <class End, class Stream>
class ws_end {
public:
  using next_layer_type = Stream;
  using executor_type = typename Stream::executor_type;

  template <class... Args>
  explicit ws_end(Args&&... args) : stream_(std::forward<Args>(args)...) {}

  executor_type get_executor() noexcept { return stream_.get_executor(); }
  Stream& next_layer() noexcept { return stream_; }
  const Stream& next_layer() const noexcept { return stream_; }

  // Whether the next data frame is text or binary (net/ws_writer.hpp sets it before each write).
  void text(bool t) { text_ = t; }

  template <class Done>
  void async_ping(const websocket::ping_data& p, Done done) {
    write_control(ws::opcode::ping, p.data(), p.size(), std::move(done));
  }
  template <class Done>
  void async_pong(const websocket::ping_data& p, Done done) {
    write_control(ws::opcode::pong, p.data(), p.size(), std::move(done));
  }
  // Our close frame (code `none`: one without a code); `done(error_code)` once it is written. The peer's answer comes
  // to the reads.
  template <class Done>
  void async_close(const websocket::close_reason& r, Done done) {
    const auto p =
        r.code == websocket::close_code::none
            ? std::string()
            : ws::close_payload(static_cast<std::uint16_t>(r.code), std::string_view(r.reason.data(), r.reason.size()));
    write_control(ws::opcode::close, p.data(), p.size(), std::move(done));
  }

protected:
  ~ws_end() = default;

  ws::opcode data_opcode() const { return text_ ? ws::opcode::text : ws::opcode::binary; }

  // Several messages in one write, into a buffer of the write's own: `frame(out, message)` writes one message's frame
  // (header_size(its size) + its size bytes) and returns its length. `done(error_code, payload bytes)`.
  template <class HeaderSize, class Frame, class Done>
  void write_many(const std::shared_ptr<const std::string>* messages, std::size_t count, HeaderSize header_size,
                  Frame frame, Done done) {
    std::size_t size = 0, payload = 0;
    for (std::size_t i = 0; i < count; ++i) {
      size += header_size(messages[i]->size()) + messages[i]->size();
      payload += messages[i]->size();
    }
    std::unique_ptr<std::uint8_t[]> frames(new std::uint8_t[size]);
    for (std::size_t i = 0, at = 0; i < count; ++i) at += frame(frames.get() + at, *messages[i]);
    write_owned(std::move(frames), size, payload, std::move(done));
  }

  // Writes `size` bytes of `frame`, `n` of them its payload; the buffer lives as long as the write.
  // `done(error_code, n or 0)`.
  template <class Done>
  void write_owned(std::unique_ptr<std::uint8_t[]> frame, std::size_t size, std::size_t n, Done done) {
    auto b = asio::buffer(frame.get(), size);
    asio::async_write(stream_, b,
                      [frame = std::move(frame), n, done = std::move(done)](beast::error_code ec, std::size_t) mutable {
                        frame.reset();
                        done(ec, ec ? 0 : n);
                      });
  }

  Stream stream_;

private:
  template <class Done>
  void write_control(ws::opcode op, const void* data, std::size_t n, Done done) {
    static_cast<End*>(this)->write_frame(
        op, data, n, [done = std::move(done)](beast::error_code ec, std::size_t) mutable { done(ec); });
  }

  bool text_ = true;
};

}  // namespace sw::net
