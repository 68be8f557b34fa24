// Internal to net/: the client end of a WebSocket over a stream of ours (a bare socket, or TLS over one), for the
// upstream connections, with what each connection holds kept small. Beast's client stream holds, for the life of the
// connection, a buffer every message is masked in (a relay chunk's size), a read buffer of 1.5 KiB, a message buffer
// as large as the largest message so far, and its state: about 7 KiB a connection. Here a frame is masked into a
// buffer of its own that lives as long as its write. A bare socket reads into 128 bytes of the connection's, and what
// the kernel holds beyond them lands in a buffer of its exact size (edge_socket's read-ahead), freed once read; over
// TLS (net/tls_stream.hpp) a connection holds a read buffer of 1 KiB (a larger message takes more reads).
//
// The caller owns the order of writes, as net/ws_writer.hpp does: one write at a time (async_write, async_ping,
// async_pong, async_close), the next in the completion of the previous. Reads: `next()` returns the next event from
// what was read already; when it says `more`, `async_fill` reads what the server sends next. The framing is
// proto/ws_frame.hpp's. Everything runs on the connection's executor.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <boost/asio/write.hpp>

#include "net/beast_util.hpp"
#include "net/edge_socket.hpp"
#include "net/ws_end.hpp"
#include "proto/ws_frame.hpp"

namespace sw::net {

template <class Stream>
class client_websocket : public ws_end<client_websocket<Stream>, Stream> {
  using base = ws_end<client_websocket<Stream>, Stream>;
  friend base;
  using base::stream_;

public:
  static constexpr bool bare = std::is_same_v<Stream, edge_socket>;
  static constexpr std::size_t read_buffer_bytes = bare ? 128 : 1024;

  using base::base;

  // The opening handshake (RFC 6455 §4.1): GET with a fresh key, then the server's 101 with the matching accept.
  // `done(error)`: empty on success, else what went wrong. Unbounded: the caller's timer bounds it.
  template <class Done>
  void async_handshake(const std::string& host, const std::string& target, Done done) {
    std::uint8_t nonce[16];
    if (RAND_bytes(nonce, sizeof nonce) != 1) {
      std::random_device rd;
      for (auto& b : nonce) b = static_cast<std::uint8_t>(rd());
    }
    struct exchange {
      http::request<http::empty_body> req;
      http::response_parser<http::string_body> res;
      beast::flat_buffer buffer;
      std::string key;
    };
    auto x = std::make_shared<exchange>();
    x->key = base64(nonce, sizeof nonce);
    x->req = http::request<http::empty_body>(http::verb::get, target, 11);
    x->req.set(http::field::host, host);
    x->req.set(http::field::upgrade, "websocket");
    x->req.set(http::field::connection, "Upgrade");
    x->req.set(http::field::sec_websocket_key, x->key);
    x->req.set(http::field::sec_websocket_version, "13");
    x->req.set(http::field::user_agent, "sessions-ws");
    x->res.header_limit(16 * 1024);
    x->res.body_limit(16 * 1024);
    x->res.skip(false);
    http::async_write(stream_, x->req, [this, x, done = std::move(done)](beast::error_code ec, std::size_t) mutable {
      if (ec) return done("websocket handshake failed: cannot send the request: " + ec.message());
      // The header only: a 101 has no body, and bytes behind it are the server's first frames.
      http::async_read_header(
          stream_, x->buffer, x->res, [this, x, done = std::move(done)](beast::error_code ec, std::size_t) mutable {
            if (ec) return done("websocket handshake failed: cannot read the response: " + ec.message());
            const auto& r = x->res.get();
            if (r.result_int() != 101)
              return done("websocket handshake failed: the server answered HTTP " + std::to_string(r.result_int()));
            if (!beast::iequals(r[http::field::upgrade], "websocket") ||
                !http::token_list(r[http::field::connection]).exists("upgrade"))
              return done("websocket handshake failed: the response does not upgrade to websocket");
            if (r[http::field::sec_websocket_accept] != ws::accept_key(x->key))
              return done("websocket handshake failed: Sec-WebSocket-Accept does not match the key");
            if (x->buffer.size() > 0)
              early_.assign(static_cast<const char*>(x->buffer.data().data()), x->buffer.size());
            in_ = early_;
            if constexpr (!bare) rx_.reset(new std::uint8_t[read_buffer_bytes]);
            done(std::string());
          });
    });
  }

  // The next event from what was read so far: `more` when a read is needed first (async_fill).
  ws::server_frame_reader::event next() {
    for (;;) {
      auto e = reader_.next(in_);
      if (e.what != ws::server_frame_reader::kind::more) return e;
      // Everything in `in_` is taken: its storage goes, and what the read took beyond the buffer comes next.
      if (!early_.empty()) early_ = std::string();
      if (in_ahead_) {
        ahead_ = read_ahead{};
        in_ahead_ = false;
      } else if (ahead_.available() > 0) {
        in_ = std::string_view(reinterpret_cast<const char*>(ahead_.data.get() + ahead_.at), ahead_.available());
        in_ahead_ = true;
        continue;
      }
      return e;
    }
  }

  // Reads what the server sends next; `done(error_code)`. Only when next() said `more`.
  template <class Done>
  void async_fill(Done done) {
    auto got = [this, done = std::move(done)](beast::error_code ec, std::size_t n) mutable {
      in_ = std::string_view(reinterpret_cast<const char*>(buffer()), ec ? 0 : n);
      done(ec);
    };
    if constexpr (bare) {
      stream_.async_read_some_ahead(asio::buffer(small_), ahead_, std::move(got));
    } else {
      stream_.async_read_some(asio::buffer(rx_.get(), read_buffer_bytes), std::move(got));
    }
  }

  // After the reading ended: reads what still comes and drops it; `done(error_code)`.
  template <class Done>
  void async_discard(Done done) {
    in_ = std::string_view();
    in_ahead_ = false;
    ahead_ = read_ahead{};
    async_fill(std::move(done));
  }

  // One message in one frame, text or binary as text() says. `done(error_code, payload bytes)`.
  template <class Done>
  void async_write(asio::const_buffer payload, Done done) {
    write_frame(this->data_opcode(), payload.data(), payload.size(), std::move(done));
  }

  // Several messages of one kind (text or binary) in one write, each a frame of its own with a masking key of its own.
  // `done(error_code, payload bytes)`.
  template <class Done>
  void async_write_many(bool text, const std::shared_ptr<const std::string>* messages, std::size_t count, Done done) {
    const auto op = text ? ws::opcode::text : ws::opcode::binary;
    this->write_many(
        messages, count, ws::client_header_size,
        [op](std::uint8_t* out, const std::string& m) {
          return ws::write_client_frame(out, op, m.data(), m.size(), mask_key());
        },
        std::move(done));
  }

private:
  std::uint8_t* buffer() {
    if constexpr (bare) {
      return small_.data();
    } else {
      return rx_.get();
    }
  }

  template <class Done>
  void write_frame(ws::opcode op, const void* data, std::size_t n, Done done) {
    const auto size = ws::client_header_size(n) + n;
    std::unique_ptr<std::uint8_t[]> frame(new std::uint8_t[size]);
    ws::write_client_frame(frame.get(), op, data, n, mask_key());
    this->write_owned(std::move(frame), size, n, std::move(done));
  }

  // A fresh masking key for every frame (RFC 6455 §5.3), from a generator seeded once per thread by the system.
  static std::uint32_t mask_key() {
    thread_local std::mt19937 gen{std::random_device{}()};
    return static_cast<std::uint32_t>(gen());
  }

  static std::string base64(const std::uint8_t* p, std::size_t n) {
    std::string out(4 * ((n + 2) / 3), '\0');
    EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), p, static_cast<int>(n));
    return out;
  }

  ws::server_frame_reader reader_{16 * 1024 * 1024};                // a message up to 16 MiB
  std::unique_ptr<std::uint8_t[]> rx_;                              // over TLS: the read buffer, from the handshake on
  std::array<std::uint8_t, bare ? read_buffer_bytes : 1> small_{};  // a bare socket's read buffer
  read_ahead ahead_;                                                // a bare socket's read: what did not fit in small_
  std::string early_;                                               // bytes that came with the handshake's response
  std::string_view in_;                                             // read and not yet taken by the reader
  bool in_ahead_ = false;                                           // in_ is ahead_'s
};

}  // namespace sw::net
