// Internal to net/: the server end of a WebSocket over a stream of ours (client_layer over a bare socket, or over
// TLS), for the clients' connections, without Beast's websocket::stream. That held about 2.9 KiB a connection for
// the life of every participant (its 1.5 KiB read buffer inside) and copied every frame through its read buffer.
// Here a connection holds its stream and the header of the frame being written: the opening handshake's answer and
// control frames are built in buffers that live as long as their write, and a text message goes out as its header
// and the caller's shared payload gathered in one write (over TLS, copied into one frame: one record, not two).
//
// Reading is the caller's: it reads the stream into its own buffer and parses it there, in place, with
// proto/ws_frame.hpp's client_frame_reader (net/server.cpp's ws_session), which also holds the closing handshake's
// state. The caller owns the order of writes, as net/ws_writer.hpp does: one write at a time (async_write,
// async_ping, async_pong, async_close), the next in the completion of the previous. Everything runs on the
// connection's executor.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <boost/asio/write.hpp>

#include "net/beast_util.hpp"
#include "net/edge_socket.hpp"
#include "net/ws_end.hpp"
#include "proto/ws_frame.hpp"

namespace sw::net {

// Reads and drops what the peer still sends (over TLS, the records: its close_notify among them) until its end or an
// error, then `done()`. An end that came with the last bytes read (a client that sends its close, or its close_notify,
// and its FIN at once) raises no edge of its own on an edge socket, and the read would wait for the close timer: each
// read first asks the kernel (wake_on_unseen_end, edge_socket.hpp). `lowest` lives as long as `done` (its owner's).
template <std::size_t N, class Lowest, class Done>
void drop_to_end(Lowest& lowest, std::unique_ptr<std::array<std::uint8_t, N>> scratch, Done done) {
  wake_on_unseen_end(raw_socket(lowest));
  auto b = asio::buffer(*scratch);
  lowest.async_read_some(
      b, [&lowest, scratch = std::move(scratch), done = std::move(done)](beast::error_code ec, std::size_t) mutable {
        if (ec) return done();
        drop_to_end(lowest, std::move(scratch), std::move(done));
      });
}

// Our side of a TCP connection ends (FIN); what the peer still sends is dropped to its end (drop_to_end, `N` bytes a
// read), then `done()`.
template <std::size_t N, class Lowest, class Done>
void end_tcp_after(Lowest& lowest, Done done) {
  beast::error_code ignored;
  raw_socket(lowest).shutdown(tcp::socket::shutdown_send, ignored);
  drop_to_end(lowest, std::make_unique<std::array<std::uint8_t, N>>(), std::move(done));
}

template <class Stream>
class server_websocket : public ws_end<server_websocket<Stream>, Stream> {
  using base = ws_end<server_websocket<Stream>, Stream>;
  friend base;
  using base::stream_;

public:
  // A bare socket under the caller's layer: a frame's header and payload go out in one gathered `sendmsg`.
  static constexpr bool bare = std::is_same_v<typename Stream::next_layer_type, edge_socket>;

  using base::base;

  // The answer to an opening handshake (RFC 6455 §4.2.2) already checked (net/http_codec.cpp's handshake_problem):
  // 101 with the accept for its key, and the subprotocol chosen (none when empty). `done(error_code)`.
  template <class Done>
  void async_accept(std::string_view key, std::string_view subprotocol, Done done) {
    auto res = std::make_unique<std::string>(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
        ws::accept_key(key) + "\r\n");
    if (!subprotocol.empty()) *res += "Sec-WebSocket-Protocol: " + std::string(subprotocol) + "\r\n";
    *res += "Server: sessions-ws\r\n\r\n";
    auto b = asio::buffer(*res);
    asio::async_write(
        stream_, b,
        [res = std::move(res), done = std::move(done)](beast::error_code ec, std::size_t) mutable { done(ec); });
  }

  // One message in one frame, text or binary as text() says. `done(error_code, payload bytes)`.
  template <class Done>
  void async_write(asio::const_buffer payload, Done done) {
    const auto op = this->data_opcode();
    const auto n = payload.size();
    if constexpr (bare) {
      const auto h = ws::write_server_header(head_.data(), op, n);
      const std::array<asio::const_buffer, 2> frame{asio::buffer(head_.data(), h), payload};
      asio::async_write(stream_, frame, [n, done = std::move(done)](beast::error_code ec, std::size_t) mutable {
        done(ec, ec ? 0 : n);
      });
    } else {
      write_frame(op, payload.data(), n, std::move(done));
    }
  }
  // Several messages of one kind (text or binary) in one write, each a frame of its own, copied into a buffer of the
  // write's own. `done(error_code, payload bytes)`.
  template <class Done>
  void async_write_many(bool text, const std::shared_ptr<const std::string>* messages, std::size_t count, Done done) {
    const auto op = text ? ws::opcode::text : ws::opcode::binary;
    this->write_many(
        messages, count, ws::server_header_size,
        [op](std::uint8_t* out, const std::string& m) {
          const auto h = ws::write_server_header(out, op, m.size());
          if (!m.empty()) std::memcpy(out + h, m.data(), m.size());
          return h + m.size();
        },
        std::move(done));
  }

  // After the closing handshake (both close frames), the server ends the TCP connection (RFC 6455 §7.1.1): it sends
  // its FIN (over TLS its close_notify first) and reads (and drops) what still comes until the client's, so that
  // nothing unread turns our close into a reset that could destroy our close frame before the client reads it. Then
  // the socket is closed and `done()` runs. No read or write of the caller's may be in flight. Unbounded: the caller's
  // timer bounds it (closing the socket ends it).
  template <class Done>
  void async_teardown(Done done) {
    auto& socket = raw_socket(beast::get_lowest_layer(stream_));
    auto finish = [&socket, done = std::move(done)]() mutable {
      beast::error_code ignored;
      socket.close(ignored);
      done();
    };
    if constexpr (bare) {
      end_tcp_after<256>(beast::get_lowest_layer(stream_), std::move(finish));
    } else {
      stream_.next_layer().async_shutdown([this, finish = std::move(finish)](beast::error_code) mutable {
        end_tcp_after<256>(beast::get_lowest_layer(stream_), std::move(finish));
      });
    }
  }

private:
  // The frame whole in a buffer of its own, which lives as long as its write.
  template <class Done>
  void write_frame(ws::opcode op, const void* data, std::size_t n, Done done) {
    const auto h = ws::server_header_size(n);
    std::unique_ptr<std::uint8_t[]> frame(new std::uint8_t[h + n]);
    ws::write_server_header(frame.get(), op, n);
    if (n > 0) std::memcpy(frame.get() + h, data, n);
    this->write_owned(std::move(frame), h + n, n, std::move(done));
  }

  std::array<std::uint8_t, 10> head_{};  // the header of the text frame being written (bare sockets)
};

}  // namespace sw::net
