// Internal to net/: TLS (OpenSSL) straight over an edge_socket: the client end of the upstream WebSocket to Gladia,
// and the server end of every TLS connection on the server's port (HTTPS and wss).
//
// Asio's ssl::stream holds, for the life of a connection, two record buffers of 17 KiB of its own and a BIO pair
// whose two buffers take 17 KiB each once used, besides OpenSSL's own record buffers: with 500 relays, a participant
// cost the server about 90 KiB more over TLS than over plain WebSocket (docs/performance.md). Here OpenSSL reads and
// writes through a BIO of ours. What a read takes from the socket lands in 256 bytes of the stream's and, beyond
// them, in a buffer of its exact size (edge_socket's read-ahead, one `recvmsg` for all the kernel holds), freed once
// OpenSSL has taken it. What OpenSSL writes is appended to a string that goes to the socket and is freed once written.
// OpenSSL gives its own record buffers back between records (SSL_MODE_RELEASE_BUFFERS). Between messages a
// connection holds its SSL object and little else.
//
// One read (async_read_some, or the handshake) and one write (async_write_some) at a time, all on the stream's
// executor (a strand's, where the runtime has several threads): OpenSSL is called from one thread at a time. A read
// that made OpenSSL write (an alert, the answer to a KeyUpdate) writes that itself when the socket has no write in
// flight, else the write in flight sends it after its own. Renegotiation is refused (SSL_OP_NO_RENEGOTIATION), so a
// write never waits for a read. A write completes once its records are on the socket.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

#include "net/edge_socket.hpp"

namespace sw::net {

class edge_tls_stream {
public:
  using executor_type = edge_socket::executor_type;

  // A client end (not yet connected: next_layer() connects it) with the context's settings and verification.
  edge_tls_stream(const executor_type& ex, boost::asio::ssl::context& ctx);
  // A server end on an accepted socket, whose first bytes (`already_read`: what found the ClientHello) were taken
  // from it already; the handshake reads them first.
  edge_tls_stream(edge_socket&& socket, boost::asio::ssl::context& ctx, boost::asio::const_buffer already_read);
  // Only with no operation in flight (an HTTP connection's stream becomes its WebSocket's).
  edge_tls_stream(edge_tls_stream&& other) noexcept;
  ~edge_tls_stream();
  edge_tls_stream(const edge_tls_stream&) = delete;
  edge_tls_stream& operator=(const edge_tls_stream&) = delete;
  edge_tls_stream& operator=(edge_tls_stream&&) = delete;

  executor_type get_executor() noexcept { return sock_.get_executor(); }
  edge_socket& next_layer() noexcept { return sock_; }
  SSL* native_handle() noexcept { return ssl_; }

  // The peer's certificate must name `host` (a DNS name, with SNI; or an IP address); false if OpenSSL refuses it.
  bool expect_host(const std::string& host);

  // The handshake (the client's or the server's, as constructed): `void(error_code)`.
  template <class Token>
  auto async_handshake(Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code)>(handshake_op(this), token, sock_);
  }
  // Decrypted bytes into the first non-empty buffer: `void(error_code, bytes)`; the peer's close_notify is `eof`,
  // the socket's end without it `ssl::error::stream_truncated`.
  template <class Buffers, class Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
        read_op<Buffers>(this, buffers), token, sock_);
  }
  // The first non-empty buffer, encrypted and written: `void(error_code, bytes)`.
  template <class Buffers, class Token>
  auto async_write_some(const Buffers& buffers, Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
        write_op<Buffers>(this, buffers), token, sock_);
  }

  // Our close_notify, written: `void(error_code)`. The peer's is not waited for (the caller ends the TCP connection
  // and reads what still comes, or closes). No read or write may be in flight.
  template <class Token>
  auto async_shutdown(Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code)>(shutdown_op(this), token, sock_);
  }

private:
  friend struct tls_bio;
  void init(boost::asio::ssl::context& ctx);
  enum class step : std::uint8_t { start, reading, writing, waiting, posted };

  // What the BIO has for OpenSSL: copied out (0: nothing yet, or the end).
  std::size_t take(void* to, std::size_t room);
  // The error after an OpenSSL call failed with SSL_get_error's `err`.
  boost::system::error_code failure(int err);
  // A socket read completed / the write of `wire_` completed.
  void filled(const boost::system::error_code& ec, std::size_t n);
  void wire_done(const boost::system::error_code& ec);
  // Puts what OpenSSL wrote on the socket (the wire must be free and out_ non-empty); `self` resumes after.
  template <class Self>
  void send_out(Self&& self) {
    wire_ = std::move(out_);
    out_.clear();
    wire_busy_ = true;
    boost::asio::async_write(sock_, boost::asio::buffer(wire_), std::forward<Self>(self));
  }
  template <class Self>
  void read_socket(Self&& self) {
    boost::asio::mutable_buffer b(head_.data(), head_.size());
    sock_.async_read_some_ahead(b, ahead_, std::forward<Self>(self));
  }

  // An operation's next step once its OpenSSL call and what that call wrote are dealt with: a socket read for more
  // input (not `done`), else its outcome: posted when nothing went asynchronous yet (never delivered inside the
  // initiating call), delivered otherwise. `at` is the operation's own, inside `self`.
  template <class Self, class... Outcome>
  void read_or_finish(Self& self, step& at, bool done, const Outcome&... outcome) {
    if (!done) {
      at = step::reading;
      return read_socket(std::move(self));
    }
    if (at == step::start) {
      at = step::posted;
      return boost::asio::post(std::move(self));
    }
    self.complete(outcome...);
  }

  // The first non-empty buffer of a sequence (Buffer: mutable_buffer or const_buffer), or an empty one.
  template <class Buffer, class Buffers>
  static Buffer first_nonempty(const Buffers& buffers) {
    for (auto it = boost::asio::buffer_sequence_begin(buffers); it != boost::asio::buffer_sequence_end(buffers); ++it)
      if (Buffer b = *it; b.size() > 0) return b;
    return {};
  }

  // The handshake and the read share their shape: an OpenSSL call (`done` once it has its outcome); what it wrote goes
  // out first; then, if it wants input, a socket read and the call again (read_or_finish).
  struct handshake_op {
    explicit handshake_op(edge_tls_stream* stream) : s(stream) {}
    edge_tls_stream* s;
    step at = step::start;
    boost::system::error_code result;
    bool done = false;

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}, std::size_t n = 0) {
      if (at == step::posted) return self.complete(result);
      if (at == step::reading) s->filled(ec, n);
      if (at == step::writing) s->wire_done(ec);
      if (!done) {
        ERR_clear_error();  // SSL_get_error reads the thread's queue
        const int r = SSL_do_handshake(s->ssl_);
        if (r == 1) {
          done = true;
        } else if (const int err = SSL_get_error(s->ssl_, r); err != SSL_ERROR_WANT_READ || s->ended()) {
          result = s->failure(err);
          done = true;
        }
      }
      if (s->write_error_ && !result) {
        result = s->write_error_;
        done = true;
      }
      // what OpenSSL wrote goes first, a failure's alert too (the peer learns why: an unknown CA, a bad name)
      if (!s->out_.empty() && !s->write_error_) {
        at = step::writing;
        return s->send_out(std::move(self));
      }
      s->read_or_finish(self, at, done, result);
    }
  };

  template <class Buffers>
  struct read_op {
    read_op(edge_tls_stream* stream, const Buffers& b) : s(stream), buffers(b) {}
    edge_tls_stream* s;
    Buffers buffers;
    step at = step::start;
    boost::system::error_code result;
    std::size_t got = 0;
    bool done = false;

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}, std::size_t n = 0) {
      if (at == step::posted) return self.complete(result, got);
      if (at == step::reading) s->filled(ec, n);
      if (at == step::writing) s->wire_done(ec);
      if (!done) {
        const auto b = first_nonempty<boost::asio::mutable_buffer>(buffers);
        std::size_t k = 0;
        ERR_clear_error();
        if (b.size() == 0) {
          done = true;
        } else if (SSL_read_ex(s->ssl_, b.data(), b.size(), &k) == 1) {
          got = k;
          done = true;
        } else if (const int err = SSL_get_error(s->ssl_, 0); err != SSL_ERROR_WANT_READ || s->ended()) {
          result = s->failure(err);
          done = true;
        }
      }
      // What OpenSSL wrote while reading goes now if the socket is free (else the write on it sends it).
      if (!s->out_.empty() && !s->wire_busy_ && !s->write_error_) {
        at = step::writing;
        return s->send_out(std::move(self));
      }
      s->read_or_finish(self, at, done, result, got);
    }
  };

  template <class Buffers>
  struct write_op {
    write_op(edge_tls_stream* stream, const Buffers& b) : s(stream), buffers(b) {}
    edge_tls_stream* s;
    Buffers buffers;
    step at = step::start;
    boost::system::error_code result;
    std::size_t taken = 0;

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}, std::size_t = 0) {
      if (at == step::posted) return self.complete(result, taken);
      if (at == step::writing) s->wire_done(ec);
      if (at == step::start && !s->write_error_) {
        const auto b = first_nonempty<boost::asio::const_buffer>(buffers);
        std::size_t k = 0;
        ERR_clear_error();
        if (b.size() > 0) {
          if (SSL_write_ex(s->ssl_, b.data(), b.size(), &k) == 1) {
            taken = k;
          } else {
            result = s->failure(SSL_get_error(s->ssl_, 0));
          }
        }
      }
      if (s->write_error_ && !result) result = s->write_error_;
      if (!result) {
        if (s->wire_busy_) {  // a read's alert or answer on the socket: ours follow it
          at = step::waiting;
          s->wire_free_.expires_at(boost::asio::steady_timer::time_point::max());
          return s->wire_free_.async_wait(std::move(self));
        }
        if (!s->out_.empty()) {
          at = step::writing;
          return s->send_out(std::move(self));
        }
      }
      if (result) taken = 0;
      s->read_or_finish(self, at, true, result, taken);
    }
  };

  struct shutdown_op {
    explicit shutdown_op(edge_tls_stream* stream) : s(stream) {}
    edge_tls_stream* s;
    step at = step::start;
    boost::system::error_code result;

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}, std::size_t = 0) {
      if (at == step::posted) return self.complete(result);
      if (at == step::writing) {
        s->wire_done(ec);
        return self.complete(s->write_error_);
      }
      ERR_clear_error();
      // 1: the peer's close_notify came already; 0: ours is written (into out_); else the connection failed before
      if (const int r = SSL_shutdown(s->ssl_); r < 0) result = s->failure(SSL_get_error(s->ssl_, r));
      if (!result && s->write_error_) result = s->write_error_;
      if (!result && !s->out_.empty() && !s->wire_busy_) {
        at = step::writing;
        return s->send_out(std::move(self));
      }
      s->read_or_finish(self, at, true, result);
    }
  };

  // No more input will come: the socket's end, or its error, was read.
  bool ended() const { return eof_ || read_error_; }

  edge_socket sock_;
  SSL* ssl_ = nullptr;
  std::array<std::uint8_t, 256> head_{};  // a socket read's first bytes (the rest: ahead_)
  std::size_t head_size_ = 0, head_at_ = 0;
  read_ahead ahead_;
  std::string out_;   // written by OpenSSL, not yet on the socket
  std::string wire_;  // being written to the socket
  bool wire_busy_ = false;
  bool eof_ = false;
  boost::system::error_code read_error_, write_error_;
  boost::asio::steady_timer wire_free_;  // a write waiting for the socket waits on it; cancelled when the socket frees
};

}  // namespace sw::net
