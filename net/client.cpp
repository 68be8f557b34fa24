#include "net/client.hpp"

#include <algorithm>
#include <optional>
#include <stdexcept>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "net/beast_util.hpp"
#include "net/tls_client.hpp"
#include "net/url.hpp"

namespace sw::net {

using clock = std::chrono::steady_clock;

const std::string* http_result::header(const std::string& lower_name) const {
  for (auto& [k, v] : headers)
    if (k == lower_name) return &v;
  return nullptr;
}

namespace {

// Runs the io_context until done() or the timeout; false on timeout.
template <class Done>
bool run_until(asio::io_context& ioc, Done done, std::chrono::milliseconds timeout) {
  auto deadline = clock::now() + timeout;
  ioc.restart();
  while (!done()) {
    auto left = deadline - clock::now();
    if (left <= clock::duration::zero()) {
      ioc.poll();  // a zero timeout still takes what is ready
      return done();
    }
    if (ioc.run_one_for(left) == 0 && ioc.stopped()) {
      if (done()) return true;
      return false;  // nothing left that could complete
    }
  }
  return true;
}

[[noreturn]] void fail(const std::string& what, const beast::error_code& ec) {
  throw std::runtime_error(what + ": " + ec.message());
}

std::shared_ptr<ssl::context> make_tls_context(const client_options& opts) {
  std::string error;
  auto ctx = client_tls_context(opts.ca_file, error);
  if (!ctx) throw std::runtime_error(error);
  return ctx;
}

// Resolves and connects a tcp_stream within the timeout.
void connect_tcp(asio::io_context& ioc, beast::tcp_stream& stream, const url& u, const client_options& opts) {
  tcp::resolver resolver(ioc);
  beast::error_code ec;
  auto results = resolver.resolve(u.host, std::to_string(u.port), ec);
  if (ec) fail("cannot resolve " + u.host, ec);
  if (opts.receive_buffer > 0) {
    auto proto = results.begin()->endpoint().protocol();
    stream.socket().open(proto, ec);
    if (!ec) stream.socket().set_option(asio::socket_base::receive_buffer_size(opts.receive_buffer), ec);
  }
  bool done = false;
  stream.expires_after(opts.timeout);
  if (opts.receive_buffer > 0) {
    stream.async_connect(results.begin()->endpoint(), [&](beast::error_code e) {
      ec = e;
      done = true;
    });
  } else {
    stream.async_connect(results, [&](beast::error_code e, const tcp::endpoint&) {
      ec = e;
      done = true;
    });
  }
  run_until(
      ioc, [&] { return done; }, opts.timeout + std::chrono::milliseconds(100));
  if (!done) throw std::runtime_error("connect timed out");
  if (ec) fail("cannot connect to " + u.host + ":" + std::to_string(u.port), ec);
  beast::error_code ignored;
  stream.socket().set_option(tcp::no_delay(true), ignored);
}

template <class Stream>
void tls_handshake(asio::io_context& ioc, Stream& stream, const url& u, const client_options& opts) {
  if (!SSL_set_tlsext_host_name(stream.native_handle(), u.host.c_str()))
    throw std::runtime_error("cannot set SNI host name");
  stream.set_verify_callback(ssl::host_name_verification(u.host));
  beast::error_code ec;
  bool done = false;
  beast::get_lowest_layer(stream).expires_after(opts.timeout);
  stream.async_handshake(ssl::stream_base::client, [&](beast::error_code e) {
    ec = e;
    done = true;
  });
  run_until(
      ioc, [&] { return done; }, opts.timeout + std::chrono::milliseconds(100));
  if (!done) throw std::runtime_error("TLS handshake timed out");
  if (ec) fail("TLS handshake with " + u.host + " failed", ec);
}

template <class Stream>
http_result do_fetch(asio::io_context& ioc, Stream& stream, const url& u, const std::string& method,
                     const std::string& body, const header_list& headers, const client_options& opts) {
  http::request<http::string_body> req(http::string_to_verb(method), u.target, 11);
  if (req.method() == http::verb::unknown) req.method_string(method);
  req.set(http::field::host, u.host + ":" + std::to_string(u.port));
  req.set(http::field::user_agent, "sessions-ws-client");
  for (auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  if (!body.empty() || method == "POST") req.prepare_payload();
  beast::error_code ec;
  bool done = false;
  beast::get_lowest_layer(stream).expires_after(opts.timeout);
  http::async_write(stream, req, [&](beast::error_code e, std::size_t) {
    ec = e;
    done = true;
  });
  run_until(
      ioc, [&] { return done; }, opts.timeout + std::chrono::milliseconds(100));
  if (!done || ec) fail("cannot send request", ec);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  parser.skip(method == "HEAD");  // the answer to a HEAD has a length and no body
  done = false;
  beast::get_lowest_layer(stream).expires_after(opts.timeout);
  http::async_read(stream, buffer, parser, [&](beast::error_code e, std::size_t) {
    ec = e;
    done = true;
  });
  run_until(
      ioc, [&] { return done; }, opts.timeout + std::chrono::milliseconds(100));
  if (!done) throw std::runtime_error("response timed out");
  if (ec) fail("cannot read response", ec);
  auto& res = parser.get();
  return http_result{res.result_int(), lower_headers(res.base()), std::move(res.body())};
}

}  // namespace

http_result http_fetch(const std::string& address, const std::string& method, const std::string& body,
                       const header_list& headers, const client_options& opts) {
  auto u = parse_url(address);
  if (!u) throw std::runtime_error("not an http(s) URL: " + shown_url(address));
  asio::io_context ioc;
  beast::tcp_stream tcp_stream(ioc);
  connect_tcp(ioc, tcp_stream, *u, opts);
  if (!u->secure()) return do_fetch(ioc, tcp_stream, *u, method, body, headers, opts);
  auto ctx = make_tls_context(opts);
  beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp_stream), *ctx);
  tls_handshake(ioc, stream, *u, opts);
  return do_fetch(ioc, stream, *u, method, body, headers, opts);
}

std::string raw_exchange(const std::string& host, std::uint16_t port, const std::string& bytes,
                         std::chrono::milliseconds timeout) {
  asio::io_context ioc;
  beast::tcp_stream stream(ioc);
  url u;
  u.host = host;
  u.port = port;
  client_options opts;
  opts.timeout = timeout;
  connect_tcp(ioc, stream, u, opts);
  beast::error_code ec;
  bool done = false;
  stream.expires_after(timeout);
  asio::async_write(stream, asio::buffer(bytes), [&](beast::error_code e, std::size_t) {
    ec = e;
    done = true;
  });
  run_until(
      ioc, [&] { return done; }, timeout);
  std::string out;
  char chunk[4096];
  auto deadline = clock::now() + timeout;
  while (clock::now() < deadline) {
    done = false;
    std::size_t n = 0;
    stream.expires_after(timeout);
    stream.async_read_some(asio::buffer(chunk), [&](beast::error_code e, std::size_t k) {
      ec = e;
      n = k;
      done = true;
    });
    if (!run_until(
            ioc, [&] { return done; }, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now())))
      break;
    out.append(chunk, n);
    if (ec) break;
  }
  return out;
}

struct ws_client::impl {
  asio::io_context ioc;
  std::shared_ptr<ssl::context> tls;
  std::optional<websocket::stream<beast::tcp_stream>> plain;
  std::optional<websocket::stream<beast::ssl_stream<beast::tcp_stream>>> secure;
  client_options opts;
  beast::flat_buffer buffer;
  bool read_pending = false;
  std::optional<message> ready;  // a completed read not yet returned
  bool open = false;

  template <class F>
  decltype(auto) with(F&& f) {
    if (plain) return f(*plain);
    return f(*secure);
  }

  void start_read() {
    read_pending = true;
    with([this](auto& ws) {
      ws.async_read(buffer, [this, &ws](beast::error_code ec, std::size_t) {
        read_pending = false;
        message m;
        if (ec) {
          open = false;
          m.kind = message::closed;
          auto reason = ws.reason();
          // A close frame that arrived counts even when tearing the connection down failed afterwards (a peer
          // that had already given up resets our answer to its close).
          const bool got_close = ec == websocket::error::closed || reason.code != websocket::close_code::none;
          m.close_code = got_close ? (reason.code ? reason.code : 1005) : 1006;
          m.close_reason = got_close ? std::string(reason.reason.data(), reason.reason.size()) : ec.message();
        } else {
          m.kind = ws.got_binary() ? message::binary : message::text;
          m.data = beast::buffers_to_string(buffer.data());
          buffer.consume(buffer.size());
        }
        ready = std::move(m);
      });
    });
  }

  // One message; `fin` false leaves it open for more frames (continuation frames of the same message).
  void write(bool text, const void* data, std::size_t size, bool fin = true) {
    if (!open) throw std::runtime_error("websocket is closed");
    beast::error_code ec;
    bool done = false;
    with([&](auto& ws) {
      ws.text(text);
      ws.async_write_some(fin, asio::buffer(data, size), [&](beast::error_code e, std::size_t) {
        ec = e;
        done = true;
      });
    });
    if (!run_until(
            ioc, [&] { return done; }, opts.timeout))
      throw std::runtime_error("websocket write timed out");
    if (ec) fail("websocket write failed", ec);
  }
};

ws_client::ws_client() : impl_(new impl) {}
ws_client::~ws_client() = default;

std::unique_ptr<ws_client> ws_client::connect(const std::string& address, const client_options& opts) {
  auto u = parse_url(address);
  if (!u) throw std::runtime_error("not a ws(s) URL: " + shown_url(address));
  std::unique_ptr<ws_client> c(new ws_client);
  auto& d = *c->impl_;
  d.opts = opts;
  beast::tcp_stream tcp_stream(d.ioc);
  connect_tcp(d.ioc, tcp_stream, *u, opts);
  if (u->secure()) {
    d.tls = make_tls_context(opts);
    beast::ssl_stream<beast::tcp_stream> s(std::move(tcp_stream), *d.tls);
    tls_handshake(d.ioc, s, *u, opts);
    d.secure.emplace(std::move(s));
  } else {
    d.plain.emplace(std::move(tcp_stream));
  }
  websocket::response_type res;
  beast::error_code ec;
  bool done = false;
  d.with([&](auto& ws) {
    beast::get_lowest_layer(ws).expires_after(opts.timeout);
    ws.async_handshake(res, u->host + ":" + std::to_string(u->port), u->target, [&](beast::error_code e) {
      ec = e;
      done = true;
    });
  });
  run_until(
      d.ioc, [&] { return done; }, opts.timeout + std::chrono::milliseconds(100));
  if (!done) throw std::runtime_error("websocket handshake timed out");
  if (ec) {
    if (res.result_int() != 0 && res.result_int() != 101)
      throw upgrade_rejected(res.result_int(), res.body(), lower_headers(res.base()));
    fail("websocket handshake failed", ec);
  }
  d.with([&](auto& ws) {
    beast::get_lowest_layer(ws).expires_never();
    websocket::stream_base::timeout t{};
    t.handshake_timeout = opts.timeout;
    t.idle_timeout = websocket::stream_base::none();
    t.keep_alive_pings = false;
    ws.set_option(t);
    ws.read_message_max(64 * 1024 * 1024);
  });
  d.open = true;
  return c;
}

void ws_client::send_text(const std::string& text) {
  impl_->write(true, text.data(), text.size());
}

void ws_client::send_binary(const void* data, std::size_t size) {
  impl_->write(false, data, size);
}

void ws_client::send_fragmented(bool text, const std::string& data, std::size_t piece) {
  if (piece == 0) throw std::invalid_argument("send_fragmented: piece must be > 0");
  std::size_t off = 0;
  do {
    const auto n = std::min(piece, data.size() - off);
    impl_->write(text, data.data() + off, n, off + n == data.size());
    off += n;
  } while (off < data.size());
}

ws_client::message ws_client::read(std::chrono::milliseconds timeout) {
  auto& d = *impl_;
  if (!d.ready && !d.read_pending) {
    if (!d.open) {
      message m;
      m.kind = message::closed;
      m.close_code = 1006;
      return m;
    }
    d.start_read();
  }
  run_until(
      d.ioc, [&] { return d.ready.has_value(); }, timeout);
  if (!d.ready) return message{};
  message m = std::move(*d.ready);
  d.ready.reset();
  return m;
}

std::string ws_client::read_until(const std::string& needle, std::chrono::milliseconds timeout) {
  auto deadline = clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() <= 0) throw std::runtime_error("timed out waiting for " + needle);
    auto m = read(left);
    if (m.kind == message::closed)
      throw std::runtime_error("closed (" + std::to_string(m.close_code) + " " + m.close_reason + ") waiting for " +
                               needle);
    if (m.kind == message::text && m.data.find(needle) != std::string::npos) return m.data;
  }
}

std::uint16_t ws_client::close(std::uint16_t code) {
  auto& d = *impl_;
  if (!d.open) return 0;
  beast::error_code ec;
  bool done = false;
  d.with([&](auto& ws) {
    ws.async_close(websocket::close_reason(static_cast<websocket::close_code>(code)), [&](beast::error_code e) {
      ec = e;
      done = true;
    });
  });
  if (!d.read_pending) d.start_read();  // the peer's close frame completes the pending read
  run_until(
      d.ioc, [&] { return done && !d.read_pending; }, d.opts.timeout);
  d.open = false;
  std::uint16_t peer = 0;
  if (done && !ec) d.with([&](auto& ws) { peer = ws.reason().code; });
  return peer;
}

bool ws_client::is_open() const {
  return impl_->open;
}

}  // namespace sw::net
