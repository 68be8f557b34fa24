#include "net/tls_stream.hpp"

#include <cstring>
#include <new>

#include <openssl/bio.h>
#include <openssl/x509v3.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/error.hpp>

namespace sw::net {

// The BIO OpenSSL reads and writes through: the stream's bytes from the socket, and the stream's string to it.
struct tls_bio {
  static edge_tls_stream* of(BIO* b) { return static_cast<edge_tls_stream*>(BIO_get_data(b)); }

  static int read(BIO* b, char* to, int room) {
    BIO_clear_retry_flags(b);
    auto* s = of(b);
    if (room <= 0) return 0;
    if (const auto n = s->take(to, static_cast<std::size_t>(room))) return static_cast<int>(n);
    if (s->ended()) return 0;  // the end (or the socket's error): OpenSSL reports it
    BIO_set_retry_read(b);     // nothing yet: the stream reads the socket
    return -1;
  }

  static int write(BIO* b, const char* from, int n) {
    BIO_clear_retry_flags(b);
    if (n <= 0) return 0;
    of(b)->out_.append(from, static_cast<std::size_t>(n));
    return n;
  }

  static long ctrl(BIO* b, int cmd, long, void*) {
    switch (cmd) {
      case BIO_CTRL_FLUSH:
        return 1;  // what was written goes with the stream's next socket write
      case BIO_CTRL_EOF: {
        auto* s = of(b);
        return s->ended() && s->head_at_ == s->head_size_ && s->ahead_.available() == 0 ? 1 : 0;
      }
      default:
        return 0;
    }
  }

  static int create(BIO* b) {
    BIO_set_init(b, 1);
    return 1;
  }

  static BIO_METHOD* method() {
    static BIO_METHOD* const m = [] {
      BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sessions-ws edge socket");
      if (!m || !BIO_meth_set_read(m, &tls_bio::read) || !BIO_meth_set_write(m, &tls_bio::write) ||
          !BIO_meth_set_ctrl(m, &tls_bio::ctrl) || !BIO_meth_set_create(m, &tls_bio::create))
        throw std::bad_alloc();
      return m;
    }();
    return m;
  }
};

edge_tls_stream::edge_tls_stream(const executor_type& ex, boost::asio::ssl::context& ctx) : sock_(ex), wire_free_(ex) {
  init(ctx);
  SSL_set_connect_state(ssl_);
}

edge_tls_stream::edge_tls_stream(edge_socket&& socket, boost::asio::ssl::context& ctx,
                                 boost::asio::const_buffer already_read)
    : sock_(std::move(socket)), wire_free_(sock_.get_executor()) {
  init(ctx);
  SSL_set_accept_state(ssl_);
  if (const auto n = already_read.size(); n > 0) {
    ahead_.data.reset(new std::uint8_t[n]);
    std::memcpy(ahead_.data.get(), already_read.data(), n);
    ahead_.size = n;
    ahead_.at = 0;
  }
}

edge_tls_stream::edge_tls_stream(edge_tls_stream&& o) noexcept
    : sock_(std::move(o.sock_)),
      ssl_(o.ssl_),
      head_(o.head_),
      head_size_(o.head_size_),
      head_at_(o.head_at_),
      ahead_(std::move(o.ahead_)),
      out_(std::move(o.out_)),
      wire_(std::move(o.wire_)),
      wire_busy_(o.wire_busy_),
      eof_(o.eof_),
      read_error_(o.read_error_),
      write_error_(o.write_error_),
      wire_free_(std::move(o.wire_free_)) {
  o.ssl_ = nullptr;
  o.ahead_.size = o.ahead_.at = 0;
  if (ssl_) BIO_set_data(SSL_get_rbio(ssl_), this);  // the BIO finds its stream here now
}

void edge_tls_stream::init(boost::asio::ssl::context& ctx) {
  ssl_ = SSL_new(ctx.native_handle());
  BIO* bio = ssl_ ? BIO_new(tls_bio::method()) : nullptr;
  if (!bio) {
    SSL_free(ssl_);
    throw std::bad_alloc();
  }
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // one BIO both ways: the SSL object owns it
  SSL_set_mode(ssl_, SSL_MODE_RELEASE_BUFFERS);
  SSL_set_options(ssl_, SSL_OP_NO_RENEGOTIATION);
}

edge_tls_stream::~edge_tls_stream() {
  SSL_free(ssl_);
}

bool edge_tls_stream::expect_host(const std::string& host) {
  boost::system::error_code ec;
  boost::asio::ip::make_address(host, ec);
  if (!ec) return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), host.c_str()) == 1;  // no SNI for an address
  return SSL_set1_host(ssl_, host.c_str()) == 1 && SSL_set_tlsext_host_name(ssl_, host.c_str()) == 1;
}

std::size_t edge_tls_stream::take(void* to, std::size_t room) {
  std::size_t n = std::min(room, head_size_ - head_at_);
  std::memcpy(to, head_.data() + head_at_, n);
  head_at_ += n;
  if (n < room && ahead_.available() > 0) n += ahead_.take(static_cast<char*>(to) + n, room - n);
  return n;
}

void edge_tls_stream::filled(const boost::system::error_code& ec, std::size_t n) {
  head_size_ = ec ? 0 : n;
  head_at_ = 0;
  if (ec == boost::asio::error::eof) {
    eof_ = true;
  } else if (ec && !read_error_) {
    read_error_ = ec;
  }
}

void edge_tls_stream::wire_done(const boost::system::error_code& ec) {
  wire_busy_ = false;
  std::string().swap(wire_);  // its memory goes now
  if (ec && !write_error_) write_error_ = ec;
  wire_free_.cancel();  // a write that waited for the socket goes on
}

boost::system::error_code edge_tls_stream::failure(int err) {
  if (err == SSL_ERROR_ZERO_RETURN) return boost::asio::error::eof;  // the peer's close_notify
  if (read_error_) return read_error_;  // what OpenSSL says then is only that its input ended
  if (const unsigned long e = ERR_get_error()) {
    if (ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) return boost::asio::ssl::error::stream_truncated;
    return {static_cast<int>(e), boost::asio::error::get_ssl_category()};
  }
  if (write_error_) return write_error_;
  if (eof_) return boost::asio::ssl::error::stream_truncated;
  return boost::asio::ssl::error::unspecified_system_error;
}

}  // namespace sw::net
