#include "net/upstream.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <utility>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "net/beast_util.hpp"
#include "net/client_websocket.hpp"
#include "net/edge_socket.hpp"
#include "net/runtime.hpp"
#include "net/tls_client.hpp"
#include "net/tls_stream.hpp"
#include "net/url.hpp"
#include "net/ws_writer.hpp"

namespace sw::net {

namespace {

// The upstream WebSocket's transports: a bare socket that reads to the edge (a short read marks it empty, so each
// message the peer sends costs one recvmsg, not a second that finds nothing: net/edge_socket.hpp), with TLS over it
// for wss (net/tls_stream.hpp: OpenSSL through a BIO of ours, not Asio's ssl::stream and its buffers). Its bounds
// are timers of our own, not Beast's basic_stream.
using edge_plain = edge_socket;
using edge_tls = edge_tls_stream;

template <class Stream>
struct is_tls : std::false_type {};
template <class Next>
struct is_tls<beast::ssl_stream<Next>> : std::true_type {};

// Resolve, connect and (for TLS) handshake with SNI and host-name verification, all within `timeout`; then
// `next(error)`.
template <class Stream, class Self, class Next>
void open_transport(std::shared_ptr<Self> self, Stream& stream, tcp::resolver& resolver, const url& u,
                    std::chrono::milliseconds timeout, Next next) {
  resolver.async_resolve(
      u.host, std::to_string(u.port),
      asio::bind_executor(  // on the stream's strand: the I/O runtime has several threads
          stream.get_executor(),
          [self, &stream, u, timeout, next](beast::error_code ec, tcp::resolver::results_type r) {
            if (ec) return next("cannot resolve " + u.host + ": " + ec.message());
            auto& lowest = beast::get_lowest_layer(stream);
            // A bare socket's bound: a timer that closes it if connect and TLS handshake take longer.
            struct progress {
              bool timed_out = false, done = false;
            };
            auto at = std::make_shared<progress>();
            std::shared_ptr<asio::steady_timer> bound;
            if constexpr (std::is_same_v<std::decay_t<decltype(lowest)>, plain_stream>) {
              lowest.expires_after(timeout);
            } else {
              bound = std::make_shared<asio::steady_timer>(stream.get_executor());
              bound->expires_after(timeout);
              bound->async_wait([&lowest, at, self](beast::error_code ec) {
                if (ec || at->done) return;
                at->timed_out = true;
                beast::error_code ignored;
                lowest.close(ignored);
              });
            }
            auto on_connect = [self, &stream, u, next, at, bound](beast::error_code ec, const tcp::endpoint&) {
              auto finish = [at, bound, next](std::string error) {
                at->done = true;
                if (bound) bound->cancel();
                if (!error.empty() && at->timed_out) error += " (timed out)";
                next(std::move(error));
              };
              if (ec) return finish("cannot connect to " + u.host + ":" + std::to_string(u.port) + ": " + ec.message());
              beast::error_code ignored;
              raw_socket(beast::get_lowest_layer(stream)).set_option(tcp::no_delay(true), ignored);
              if constexpr (std::is_same_v<Stream, edge_tls_stream>) {
                if (!stream.expect_host(u.host)) return finish("cannot check the TLS peer's name " + u.host);
                resume_tls_session(stream.native_handle(), u.host);
                stream.async_handshake([self, u, finish](beast::error_code ec) {
                  if (ec) return finish("TLS handshake with " + u.host + " failed: " + ec.message());
                  finish(std::string{});
                });
              } else if constexpr (is_tls<Stream>::value) {
                if (!SSL_set_tlsext_host_name(stream.native_handle(), u.host.c_str()))
                  return finish("cannot set SNI host name " + u.host);
                stream.set_verify_callback(ssl::host_name_verification(u.host));
                resume_tls_session(stream.native_handle(), u.host);
                stream.async_handshake(ssl::stream_base::client, [self, u, finish](beast::error_code ec) {
                  if (ec) return finish("TLS handshake with " + u.host + " failed: " + ec.message());
                  finish(std::string{});
                });
              } else {
                finish(std::string{});
              }
            };
            if constexpr (std::is_same_v<std::decay_t<decltype(lowest)>, plain_stream>) {
              lowest.async_connect(r, std::move(on_connect));
            } else {
              // once the bound has passed, no further address of the host is tried
              asio::async_connect(
                  lowest, r, [at](const beast::error_code&, const tcp::endpoint&) { return !at->timed_out; },
                  std::move(on_connect));
            }
          }));
}

template <class Stream>
class fetch_op : public std::enable_shared_from_this<fetch_op<Stream>> {
public:
  template <class... StreamArgs>
  fetch_op(io_runtime& io, url u, client_options opts, std::function<void(http_outcome)> done,
           std::shared_ptr<ssl::context> tls, StreamArgs&&... args)
      : resolver_(io.context()),
        tls_(std::move(tls)),
        stream_(io.connection_executor(), std::forward<StreamArgs>(args)...),
        u_(std::move(u)),
        opts_(std::move(opts)),
        done_(std::move(done)) {}

  void run(http::request<http::string_body> req) {
    req_ = std::move(req);
    auto self = this->shared_from_this();
    open_transport(self, stream_, resolver_, u_, opts_.timeout, [self](std::string error) {
      if (!error.empty()) return self->finish(std::move(error));
      beast::get_lowest_layer(self->stream_).expires_after(self->opts_.timeout);
      http::async_write(self->stream_, self->req_, [self](beast::error_code ec, std::size_t) {
        if (ec) return self->finish("cannot send request: " + ec.message());
        self->parser_.body_limit(4 * 1024 * 1024);
        http::async_read(self->stream_, self->buffer_, self->parser_, [self](beast::error_code ec, std::size_t) {
          if (ec) return self->finish("cannot read response: " + ec.message());
          auto& res = self->parser_.get();
          http_outcome out;
          out.ok = true;
          out.status = res.result_int();
          out.headers = lower_headers(res.base());
          out.body = std::move(res.body());
          self->done_(std::move(out));
          beast::error_code ignored;
          beast::get_lowest_layer(self->stream_).socket().close(ignored);
        });
      });
    });
  }

private:
  void finish(std::string error) {
    http_outcome out;
    out.error = std::move(error);
    done_(std::move(out));
  }

  tcp::resolver resolver_;
  std::shared_ptr<ssl::context> tls_;
  Stream stream_;
  url u_;
  client_options opts_;
  std::function<void(http_outcome)> done_;
  http::request<http::string_body> req_;
  beast::flat_buffer buffer_;
  http::response_parser<http::string_body> parser_;
};

// An upstream WebSocket: the transport (open_transport), the opening handshake, then reads and one write at a time.
// Control frames: the server's pings are answered, its close frame is echoed (then the socket closes), a protocol
// violation is answered with the close code RFC 6455 gives it; `closed` reports each once.
template <class Stream>
class ws_op final : public outbound_ws, public std::enable_shared_from_this<ws_op<Stream>> {
public:
  template <class... StreamArgs>
  ws_op(io_runtime& io, url u, client_options opts, ws_events ev, std::shared_ptr<ssl::context> tls,
        StreamArgs&&... args)
      : resolver_(io.context()),
        tls_(std::move(tls)),
        ws_(io.connection_executor(), std::forward<StreamArgs>(args)...),
        u_(std::move(u)),
        opts_(std::move(opts)),
        ev_(std::move(ev)),
        writer_(
            ws_, [this](beast::error_code ec, const ws_frame& f) { on_written(ec, f); }, opts_.timeout) {}

  void run() {
    auto self = this->shared_from_this();
    asio::post(ws_.get_executor(), [self] {
      open_transport(self, self->ws_.next_layer(), self->resolver_, self->u_, self->opts_.timeout,
                     [self](std::string error) {
                       if (!error.empty()) return self->report_closed(1006, std::move(error));
                       self->bound(&ws_op::bound_passed_);  // the handshake's bound
                       self->ws_.async_handshake(self->u_.host, self->u_.target, [self](std::string error) {
                         self->bound_.cancel();
                         if (!error.empty()) {
                           if (self->bound_passed_) error += " (timed out)";
                           return self->report_closed(1006, std::move(error));
                         }
                         self->last_heard_ = std::chrono::steady_clock::now();
                         self->arm_ping();
                         self->open_ = true;
                         if (self->ev_.opened) self->ev_.opened();
                         self->do_read();
                         self->writer_.pump(self);
                       });
                     });
    });
  }

  void send_binary(std::shared_ptr<const std::string> bytes) override { enqueue(frame_kind::binary, std::move(bytes)); }
  void send_text(std::string text) override {
    enqueue(frame_kind::text, std::make_shared<const std::string>(std::move(text)));
  }
  std::size_t backlog() const override { return backlog_.load(std::memory_order_relaxed); }

  void notify_when_drained() override {
    auto self = this->shared_from_this();
    asio::post(ws_.get_executor(), [self] {
      if (self->finished_) return;
      if (self->writer_.idle()) {
        if (self->ev_.drained) self->ev_.drained();
      } else {
        self->want_drained_ = true;
      }
    });
  }

  void probe_end() override {
    auto self = this->shared_from_this();
    asio::post(ws_.get_executor(), [self] {
      if (self->open_ && !self->finished_) wake_on_unseen_end(raw_socket(beast::get_lowest_layer(self->ws_)));
    });
  }

  void close(std::uint16_t code) override {
    auto self = this->shared_from_this();
    asio::post(ws_.get_executor(), [self, code] {
      if (self->finished_ || self->writer_.closing()) return;
      self->writer_.close_when_done(websocket::close_reason(static_cast<websocket::close_code>(code)));
      if (self->open_) self->writer_.pump(self);
    });
  }

  void abort() override {
    auto self = this->shared_from_this();
    asio::post(ws_.get_executor(), [self] {
      self->teardown();
      self->report_closed(1006, "aborted");
    });
  }

private:
  void enqueue(frame_kind kind, std::shared_ptr<const std::string> data) {
    backlog_ += data->size();
    auto self = this->shared_from_this();
    asio::post(ws_.get_executor(), [self, kind, data = std::move(data)]() mutable {
      if (self->finished_ || self->writer_.closing()) {
        self->backlog_ -= data->size();
        return;
      }
      self->writer_.push({kind, std::move(data)});
      if (self->open_) self->writer_.pump(self);
    });
  }

  void on_written(beast::error_code ec, const ws_frame& f) {
    backlog_ -= f.size();
    if (ec == beast::error::timeout) write_timed_out_ = true;
    if (f.kind == frame_kind::close) {
      close_written_ = true;
      if (ec) {
        teardown();
        if (ending_) report_closed(ending_->first, std::move(ending_->second));
      } else if (ending_) {  // an echo, or the answer to a violation: reported now, the socket closes behind it
        report_closed(ending_->first, std::move(ending_->second));
        linger();
      } else {
        bound(&ws_op::close_bound_passed_);  // our close: the server's answer comes to the read, within the bound
      }
      return;
    }
    if (!ec && want_drained_ && writer_.queued_frames() == 0) {
      want_drained_ = false;
      if (ev_.drained) ev_.drained();
    }
  }

  // Every ping interval: silence from the peer for that long gets a ping; for twice that long, the connection is
  // closed (a peer that stopped reading answers nothing). One timer per ping interval, nothing per message.
  void arm_ping() {
    if (opts_.ping_interval.count() <= 0) return;
    ping_timer_.expires_after(opts_.ping_interval);
    ping_timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (ec || self->finished_) return;
      auto silent = std::chrono::steady_clock::now() - self->last_heard_;
      if (silent >= 2 * self->opts_.ping_interval) {
        self->ping_timed_out_ = true;
        self->teardown();  // the pending read reports the end
        return;
      }
      if (silent >= self->opts_.ping_interval && !self->writer_.closing()) {
        self->writer_.push({frame_kind::ping, nullptr});
        self->writer_.pump(self);
      }
      self->arm_ping();
    });
  }

  // Events from what was read, then a read for more. A close frame or a violation ends the reading.
  void do_read() {
    using kind = ws::server_frame_reader::kind;
    for (auto e = ws_.next(); e.what != kind::more; e = ws_.next()) {
      switch (e.what) {
        case kind::text:
          if (ev_.text) ev_.text(std::move(e.data));
          break;
        case kind::ping:
          if (!writer_.closing()) {
            writer_.push({frame_kind::pong, std::make_shared<const std::string>(std::move(e.data))});
            writer_.pump(this->shared_from_this());
          }
          break;
        case kind::close:
          return end_with(e.code, std::move(e.data), e.code, std::string());  // the echo: its code
        case kind::error:
          return end_with(1006, "the peer broke the WebSocket protocol: " + e.data, e.code, e.data);
        default:  // a binary message (Gladia sends text only) or a pong: nothing to do
          break;
      }
    }
    ws_.async_fill([self = this->shared_from_this()](beast::error_code ec) {
      self->last_heard_ = std::chrono::steady_clock::now();
      if (!ec) return self->do_read();
      if (self->write_timed_out_) {
        self->report_closed(1006, "write timeout: the peer stopped reading");
      } else if (self->ping_timed_out_) {
        self->report_closed(1006, "no answer to pings: the connection is dead");
      } else if (self->close_bound_passed_) {
        self->report_closed(1006, "no close frame from the peer within the timeout");
      } else {
        self->report_closed(1006, ec.message());
      }
    });
  }

  // The reading ended (the server's close frame, or a violation of the protocol): `closed` reports `code` and
  // `reason` once our close frame is out: the answer to theirs, `answer` (1005: a close frame without a code), unless
  // ours went already. What waits to be written is dropped.
  void end_with(std::uint16_t code, std::string reason, std::uint16_t answer, const std::string& answer_reason) {
    bound_.cancel();
    if (close_written_) {  // the answer to ours
      report_closed(code, std::move(reason));
      return linger();
    }
    ending_.emplace(code, std::move(reason));
    writer_.drop_waiting();
    writer_.close_when_done(answer == 1005 ? websocket::close_reason(websocket::close_code::none)
                                           : websocket::close_reason(static_cast<websocket::close_code>(answer),
                                                                     answer_reason.substr(0, 123)));
    writer_.pump(this->shared_from_this());
  }

  // Arms the bound (the handshake's, or the wait for the answer to our close): once it passes, `*flag` is set and
  // the socket closes, which ends what waits on it.
  void bound(bool ws_op::*flag) {
    bound_.expires_after(opts_.timeout);
    bound_.async_wait([self = this->shared_from_this(), flag](beast::error_code ec) {
      if (ec || self->finished_) return;
      (*self).*flag = true;
      self->teardown();
    });
  }

  // Both close frames are out: the server closes the TCP connection first (RFC 6455 §7.1.1). Ours says it will send
  // nothing more, and what still comes is read and dropped until the end of the stream, or the bound.
  void linger() {
    beast::error_code ignored;
    raw_socket(beast::get_lowest_layer(ws_)).shutdown(tcp::socket::shutdown_send, ignored);
    bound_.expires_after(opts_.timeout);
    bound_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (!ec) self->teardown();
    });
    drain();
  }
  void drain() {
    ws_.async_discard([self = this->shared_from_this()](beast::error_code ec) {
      if (!ec) return self->drain();
      self->bound_.cancel();
      self->teardown();
    });
  }

  void teardown() {
    beast::error_code ignored;
    raw_socket(beast::get_lowest_layer(ws_)).close(ignored);
  }

  void report_closed(std::uint16_t code, std::string reason) {
    if (finished_) return;
    finished_ = true;
    std::size_t waiting = writer_.queued_bytes();
    ping_timer_.cancel();
    bound_.cancel();
    writer_.stop();  // a write in flight keeps its own buffer until it completes
    backlog_ -= waiting - writer_.queued_bytes();
    if (ev_.closed) ev_.closed(code, std::move(reason));
  }

  tcp::resolver resolver_;
  std::shared_ptr<ssl::context> tls_;
  client_websocket<Stream> ws_;
  url u_;
  client_options opts_;
  ws_events ev_;
  ws_writer<client_websocket<Stream>> writer_;
  asio::steady_timer ping_timer_{ws_.get_executor()};
  asio::steady_timer bound_{ws_.get_executor()};
  std::chrono::steady_clock::time_point last_heard_;  // the peer's last bytes
  std::atomic<std::size_t> backlog_{0};               // bytes handed to send_* and not yet written (read by the owner)
  std::optional<std::pair<std::uint16_t, std::string>> ending_;  // what `closed` reports once our close is out
  bool open_ = false, finished_ = false, want_drained_ = false, write_timed_out_ = false, ping_timed_out_ = false;
  bool bound_passed_ = false, close_bound_passed_ = false, close_written_ = false;
};

// Reports a failure asynchronously on the runtime thread (callbacks never run inside the caller).
class failed_ws final : public outbound_ws {
public:
  void send_binary(std::shared_ptr<const std::string>) override {}
  std::size_t backlog() const override { return 0; }
  void notify_when_drained() override {}
  void probe_end() override {}
  void send_text(std::string) override {}
  void close(std::uint16_t) override {}
  void abort() override {}
};

}  // namespace

struct outbound::impl {
  std::shared_ptr<io_runtime> io;
  asio::io_context& ioc;
  explicit impl(std::shared_ptr<io_runtime> r) : io(std::move(r)), ioc(io->context()) {}

  // One client TLS context per CA setting, shared by every connection that uses it: making one (loading the
  // system's CA store) takes milliseconds, far too long for every stream start and reconnect.
  std::mutex tls_mu;
  std::map<std::string, std::shared_ptr<ssl::context>> tls_contexts;

  std::shared_ptr<ssl::context> tls_context(const std::string& ca_file, std::string& error) {
    std::lock_guard<std::mutex> lock(tls_mu);
    if (auto it = tls_contexts.find(ca_file); it != tls_contexts.end()) return it->second;
    auto ctx = client_tls_context(ca_file, error);
    if (!ctx) return nullptr;  // not kept: the file may be mended
    keep_tls_sessions(*ctx);   // a stream's HTTPS init and `wss`, and every reconnect, go to the same few hosts
    tls_contexts.emplace(ca_file, ctx);
    return ctx;
  }
};

outbound::outbound(std::shared_ptr<io_runtime> io)
    : impl_(new impl(io ? std::move(io) : std::make_shared<io_runtime>(1))) {}

outbound::~outbound() = default;

std::string outbound::prepare_tls(const std::string& ca_file) {
  std::string error;
  impl_->tls_context(ca_file, error);
  return error;
}

std::size_t outbound::tls_contexts() const {
  std::lock_guard<std::mutex> lock(impl_->tls_mu);
  return impl_->tls_contexts.size();
}

void outbound::fetch(const std::string& address, const std::string& method, header_list headers, std::string body,
                     const client_options& opts, std::function<void(http_outcome)> done) {
  auto u = parse_url(address);
  auto fail = [&](std::string error) {
    asio::post(impl_->ioc, [done, error] {
      http_outcome out;
      out.error = error;
      done(out);
    });
  };
  if (!u) return fail("not an http(s) URL: " + shown_url(address));
  http::request<http::string_body> req(http::string_to_verb(method), u->target, 11);
  req.set(http::field::host, u->host);
  req.set(http::field::user_agent, "sessions-ws");
  for (auto& [k, v] : headers) req.set(k, v);
  req.body() = std::move(body);
  req.prepare_payload();
  if (u->secure()) {
    std::string error;
    auto ctx = impl_->tls_context(opts.ca_file, error);
    if (!ctx) return fail(error);
    auto op = std::make_shared<fetch_op<tls_stream>>(*impl_->io, *u, opts, std::move(done), ctx, *ctx);
    op->run(std::move(req));
  } else {
    auto op = std::make_shared<fetch_op<plain_stream>>(*impl_->io, *u, opts, std::move(done), nullptr);
    op->run(std::move(req));
  }
}

std::shared_ptr<outbound_ws> outbound::connect_ws(const std::string& address, const client_options& opts,
                                                  ws_events events) {
  auto u = parse_url(address);
  auto fail = [&](std::string error) -> std::shared_ptr<outbound_ws> {
    asio::post(impl_->ioc, [events, error] {
      if (events.closed) events.closed(1006, error);
    });
    return std::make_shared<failed_ws>();
  };
  if (!u) return fail("not a ws(s) URL: " + shown_url(address));
  if (u->secure()) {
    std::string error;
    auto ctx = impl_->tls_context(opts.ca_file, error);
    if (!ctx) return fail(error);
    auto op = std::make_shared<ws_op<edge_tls>>(*impl_->io, *u, opts, std::move(events), ctx, *ctx);
    op->run();
    return op;
  }
  auto op = std::make_shared<ws_op<edge_plain>>(*impl_->io, *u, opts, std::move(events), nullptr);
  op->run();
  return op;
}

}  // namespace sw::net
