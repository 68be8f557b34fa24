// Internal to net/: a TCP socket whose reads wait for epoll's next edge once a read came back short.
//
// Asio's reactor (Boost 1.81) registers every socket with epoll edge-triggered and tries each read at once, before it
// waits ("speculatively"). It stops trying only once a read has reported the socket exhausted, and a stream socket's
// read reports that only at the end of the stream. So a WebSocket that receives one frame at a time pays two
// `recvmsg` per frame: the one that reads the frame and, when the next read starts, one that finds nothing (EAGAIN).
// A wait for readability instead (`async_wait`) re-arms the descriptor with `epoll_ctl` every time: no better.
//
// The read here is Asio's own, with one difference: a read that returns fewer bytes than it had room for reports the
// socket exhausted. The reactor then queues the next read without trying it, and the next edge (new bytes arrive)
// performs it. That is safe because a TCP receive copies everything queued, up to the room given: fewer bytes means
// nothing was left, and whatever arrives later raises a new edge (bytes that come while the receive holds the socket
// wait in its backlog and wake epoll when it lets go). One `recvmsg` per frame, no `epoll_ctl`. The one exception is
// TCP urgent data (MSG_OOB): Linux ends a receive at the urgent mark, so a client that sends it stalls its own stream
// until its next packet. No WebSocket client sends it, and no one else is affected. The other exception is the end of
// the stream: a FIN that came with the last bytes (before the read took them) raises no edge after that short read,
// and a read reports the end only once nothing is left. So the end goes unseen until something else wakes the socket;
// the server looks for it at each pause in a client's audio (server.cpp, probe_end), the Gladia relay when nothing is
// acknowledged for a second into such a pause (outbound_ws::probe_end); both by wake_on_unseen_end, below.
//
// A read may also take bytes beyond the caller's buffer (async_read_some_ahead): the same `recvmsg` scatters the rest
// of what the kernel holds into a scratch buffer of the thread's, and what landed there is kept (allocated at its size)
// for the caller's next reads. Beast asks for at most 1 536 bytes a read (its frame buffer) or a frame's rest, so
// a chunk of five 20 ms frames held in the kernel (client_layer.hpp) would otherwise take three reads, not one.
//
// A socket may also report when the kernel received what a read took (stamp_receipts: SO_TIMESTAMPNS, the receive
// time of the last segment the read copied out): the fake Gladia counts a chunk's arrival from it, not from when its
// own thread got to the read, so a busy load tool's core does not show as relay latency.
//
// It uses Asio's reactor interface (`boost::asio::detail`), which is not public: written against Boost 1.81's epoll
// reactor, the only one this project builds with (Debian 12). Anything else falls back to the plain read.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <utility>

#include <sys/socket.h>
#include <boost/asio/async_result.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/websocket/teardown.hpp>
#include <boost/version.hpp>
#include <cerrno>

#if defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT) && BOOST_VERSION == 108100
#define SW_EDGE_SOCKET 1
#include <sys/socket.h>
#include <sys/uio.h>
#include <boost/asio/detail/buffer_sequence_adapter.hpp>
#include <boost/asio/detail/handler_alloc_helpers.hpp>
#include <boost/asio/detail/handler_cont_helpers.hpp>
#include <boost/asio/detail/handler_work.hpp>
#include <boost/asio/detail/memory.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#include <boost/asio/detail/socket_ops.hpp>
#include <cerrno>
#include <ctime>
#endif

namespace sw::net {

// What a read took beyond its caller's buffer, in stream order; freed once taken.
struct read_ahead {
  std::unique_ptr<std::uint8_t[]> data;
  std::size_t size = 0, at = 0;
  std::size_t available() const { return size - at; }
  // Copies up to `room` bytes out; frees the storage once everything is taken.
  std::size_t take(void* to, std::size_t room) {
    const std::size_t n = std::min(room, available());
    std::memcpy(to, data.get() + at, n);
    at += n;
    if (at == size) {
      data.reset();
      size = at = 0;
    }
    return n;
  }
  // Completes a read of `buffers` with what is kept (some must be): copied in, the handler posted to its executor
  // (`fallback` when it has none), as a socket read would complete it.
  template <class Buffers, class Handler, class Executor>
  void serve(const Buffers& buffers, Handler&& handler, const Executor& fallback) {
    std::size_t n = 0;
    for (auto it = boost::asio::buffer_sequence_begin(buffers); it != boost::asio::buffer_sequence_end(buffers); ++it) {
      const boost::asio::mutable_buffer piece = *it;
      n += take(piece.data(), piece.size());
    }
    auto ex = boost::asio::get_associated_executor(handler, fallback);
    boost::asio::post(
        ex, [h = std::forward<Handler>(handler), n]() mutable { std::move(h)(boost::system::error_code(), n); });
  }
};

#ifdef SW_EDGE_SOCKET
namespace edge_detail {
namespace ad = boost::asio::detail;

// socket_ops::non_blocking_recv (false: nothing to read yet, wait for the edge); with `stamp`, also the kernel's
// receive time of the last segment taken (CLOCK_REALTIME ns) into *stamp when the socket gives one (SO_TIMESTAMPNS).
inline bool recv_some(int fd, iovec* iov, std::size_t count, boost::system::error_code& ec, std::size_t& n,
                      std::int64_t* stamp) {
  if (!stamp) return ad::socket_ops::non_blocking_recv(fd, iov, count, 0, true, ec, n);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];
  for (;;) {
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = count;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    const ssize_t r = ::recvmsg(fd, &m, 0);
    if (r >= 0) {
      for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
          timespec ts{};
          std::memcpy(&ts, CMSG_DATA(c), sizeof ts);
          *stamp = static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
        }
      ec = r == 0 ? boost::system::error_code(boost::asio::error::eof) : boost::system::error_code();
      n = static_cast<std::size_t>(r);
      return true;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    ec = boost::system::error_code(errno, boost::asio::error::get_system_category());
    n = 0;
    return true;
  }
}

// Asio's reactive_socket_recv_op_base, but a short read exhausts the socket.
template <class Buffers>
class recv_op_base : public ad::reactor_op {
public:
  recv_op_base(const boost::system::error_code& success_ec, ad::socket_type s, const Buffers& b, func_type complete,
               read_ahead* ahead, std::int64_t* stamp)
      : ad::reactor_op(success_ec, &recv_op_base::do_perform, complete),
        socket_(s),
        buffers_(b),
        ahead_(ahead),
        stamp_(stamp) {}

  static status do_perform(ad::reactor_op* base) {
    auto* o = static_cast<recv_op_base*>(base);
    ad::buffer_sequence_adapter<boost::asio::mutable_buffer, Buffers> bufs(o->buffers_);
    if (!o->ahead_) {
      if (!recv_some(o->socket_, bufs.buffers(), bufs.count(), o->ec_, o->bytes_transferred_, o->stamp_))
        return not_done;  // EAGAIN: wait for the edge
      // An error or the end of the stream (0 bytes) exhausts it as Asio's own read does; so does a short read.
      return o->bytes_transferred_ < bufs.total_size() ? done_and_exhausted : done;
    }
    // The caller's buffers, then the thread's scratch (this runs on the thread that performs it, start to end).
    thread_local std::array<std::uint8_t, 65536> scratch;
    std::array<iovec, ad::buffer_sequence_adapter_base::max_buffers + 1> iov;
    const std::size_t count = std::min<std::size_t>(bufs.count(), iov.size() - 1);
    std::copy(bufs.buffers(), bufs.buffers() + count, iov.begin());
    iov[count].iov_base = scratch.data();
    iov[count].iov_len = scratch.size();
    std::size_t n = 0;
    if (!recv_some(o->socket_, iov.data(), count + 1, o->ec_, n, o->stamp_)) return not_done;
    const std::size_t room = bufs.total_size();
    o->bytes_transferred_ = std::min(n, room);
    if (n > room) {
      o->ahead_->data.reset(new std::uint8_t[n - room]);
      std::memcpy(o->ahead_->data.get(), scratch.data(), n - room);
      o->ahead_->size = n - room;
      o->ahead_->at = 0;
    }
    return n < room + scratch.size() ? done_and_exhausted : done;
  }

private:
  ad::socket_type socket_;
  Buffers buffers_;
  read_ahead* ahead_;    // null: the caller's buffers only
  std::int64_t* stamp_;  // null: no receive times asked for
};

// Asio's reactive_socket_recv_op: owns the handler and its work, completes it.
template <class Buffers, class Handler, class IoExecutor>
class recv_op : public recv_op_base<Buffers> {
public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(recv_op);

  recv_op(const boost::system::error_code& success_ec, ad::socket_type s, const Buffers& b, Handler& handler,
          const IoExecutor& io_ex, read_ahead* ahead, std::int64_t* stamp)
      : recv_op_base<Buffers>(success_ec, s, b, &recv_op::do_complete, ahead, stamp),
        handler_(std::move(handler)),
        work_(handler_, io_ex) {}

  static void do_complete(void* owner, ad::operation* base, const boost::system::error_code&, std::size_t) {
    auto* o = static_cast<recv_op*>(base);
    ptr p = {ad::addressof(o->handler_), o, o};
    ad::handler_work<Handler, IoExecutor> w(std::move(o->work_));
    // The handler moves out before the memory goes back, as Asio's own ops do.
    ad::binder2<Handler, boost::system::error_code, std::size_t> handler(o->handler_, o->ec_, o->bytes_transferred_);
    p.h = ad::addressof(handler.handler_);
    p.reset();
    if (owner) {
      ad::fenced_block b(ad::fenced_block::half);
      w.complete(handler, handler.handler_);
    }
  }

private:
  Handler handler_;
  ad::handler_work<Handler, IoExecutor> work_;
};

// Per-operation cancellation, as Asio's reactor_op_cancellation (protected in its service) does it.
class cancellation {
public:
  cancellation(ad::reactor* r, ad::reactor::per_descriptor_data* d, int fd) : reactor_(r), data_(d), fd_(fd) {}
  void operator()(boost::asio::cancellation_type_t type) {
    using ct = boost::asio::cancellation_type;
    if (!!(type & (ct::terminal | ct::partial | ct::total)))
      reactor_->cancel_ops_by_key(fd_, *data_, ad::reactor::read_op, this);
  }

private:
  ad::reactor* reactor_;
  ad::reactor::per_descriptor_data* data_;
  int fd_;
};
}  // namespace edge_detail
#endif

class edge_socket : public boost::asio::ip::tcp::socket {
public:
  using tcp_socket = boost::asio::ip::tcp::socket;
  explicit edge_socket(tcp_socket&& s) : tcp_socket(std::move(s)) {}
  // Unopened, for a connection of our own (the upstream).
  explicit edge_socket(const tcp_socket::executor_type& ex) : tcp_socket(ex) {}

  // From now on each read notes when the kernel received the last segment it took (SO_TIMESTAMPNS); false where
  // that is not built or the socket refuses. receipt_realtime_ns(): that time (CLOCK_REALTIME ns) for the latest
  // read that brought one, 0 before.
  bool stamp_receipts() {
#ifdef SW_EDGE_SOCKET
    const int on = 1;
    stamping_ = ::setsockopt(native_handle(), SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on) == 0;
#endif
    return stamping_;
  }
  std::int64_t receipt_realtime_ns() const {
    return receipt_ns_;
  }

#ifdef SW_EDGE_SOCKET
  template <class Buffers, class Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, const Buffers& b) { this->start_read(b, handler, nullptr); }, token, buffers);
  }

  // As async_read_some, and what the kernel holds beyond `buffers` goes to `ahead` (empty when it starts; it must
  // outlive the read).
  template <class Buffers, class Token>
  auto async_read_some_ahead(const Buffers& buffers, read_ahead& ahead, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this, &ahead](auto handler, const Buffers& b) { this->start_read(b, handler, &ahead); }, token, buffers);
  }

private:
  template <class Buffers, class Handler>
  void start_read(const Buffers& b, Handler& handler, read_ahead* ahead) {
    namespace ad = boost::asio::detail;
    auto& impl = impl_.get_implementation();
    auto& reactor = boost::asio::use_service<ad::reactor>(
        boost::asio::query(impl_.get_executor(), boost::asio::execution::context));
    const bool is_continuation = boost_asio_handler_cont_helpers::is_continuation(handler);
    auto slot = boost::asio::get_associated_cancellation_slot(handler);

    using op = edge_detail::recv_op<Buffers, Handler, std::decay_t<decltype(impl_.get_executor())>>;
    typename op::ptr p = {ad::addressof(handler), op::ptr::allocate(handler), nullptr};
    p.p = new (p.v) op(boost::system::error_code(), impl.socket_, b, handler, impl_.get_executor(), ahead,
                       stamping_ ? &receipt_ns_ : nullptr);
    if (slot.is_connected())
      p.p->cancellation_key_ =
          &slot.template emplace<edge_detail::cancellation>(&reactor, &impl.reactor_data_, impl.socket_);

    // As Asio's service does: an empty read completes at once; the socket is made non-blocking first.
    if (ad::buffer_sequence_adapter<boost::asio::mutable_buffer, Buffers>::all_empty(b) ||
        (!(impl.state_ & ad::socket_ops::non_blocking) &&
         !ad::socket_ops::set_internal_non_blocking(impl.socket_, impl.state_, true, p.p->ec_)))
      reactor.post_immediate_completion(p.p, is_continuation);
    else
      reactor.start_op(ad::reactor::read_op, impl.socket_, impl.reactor_data_, p.p, is_continuation, true);
    p.v = p.p = nullptr;
  }
#else
  template <class Buffers, class Token>
  auto async_read_some_ahead(const Buffers& buffers, read_ahead&, Token&& token) {
    return tcp_socket::async_read_some(buffers, std::forward<Token>(token));
  }
#endif

private:
  bool stamping_ = false;
  std::int64_t receipt_ns_ = 0;  // written by the read in progress, on the thread that performs it
};

// An edge_socket whose every read takes all the kernel holds: what lands beyond the caller's buffer is kept and given
// to the next reads, without a socket read. For a plain WebSocket server that reads through Beast (its 1 536-byte frame
// buffer first, then the frame's rest), a message that is in the kernel whole costs one `recvmsg`, not two or three.
// The fake Gladia (tests/fakes/) reads the relay's chunks this way; the server's client sockets do it in client_layer.
class ahead_socket : public edge_socket {
public:
  using edge_socket::edge_socket;

  template <class Buffers, class Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
        [this](auto handler, const Buffers& b) {
          if (ahead_.available() > 0) {
            ahead_.serve(b, std::move(handler), get_executor());
          } else {
            async_read_some_ahead(b, ahead_, std::move(handler));
          }
        },
        token, buffers);
  }

private:
  read_ahead ahead_;
};

// A WebSocket closes the socket under it as Beast closes any TCP socket.
inline void teardown(boost::beast::role_type role, edge_socket& s, boost::system::error_code& ec) {
  boost::beast::websocket::teardown(role, static_cast<edge_socket::tcp_socket&>(s), ec);
}
template <class Handler>
void async_teardown(boost::beast::role_type role, edge_socket& s, Handler&& handler) {
  boost::beast::websocket::async_teardown(role, static_cast<edge_socket::tcp_socket&>(s),
                                          std::forward<Handler>(handler));
}
inline void teardown(boost::beast::role_type role, ahead_socket& s, boost::system::error_code& ec) {
  teardown(role, static_cast<edge_socket&>(s), ec);
}
template <class Handler>
void async_teardown(boost::beast::role_type role, ahead_socket& s, Handler&& handler) {
  async_teardown(role, static_cast<edge_socket&>(s), std::forward<Handler>(handler));
}

// The end of the stream that came with the last bytes a read took raises no edge (above), so the read in flight waits
// on: one peek asks the kernel. Nothing queued and the end reached, or the connection failed (a reset: the peek took
// its error, so the read would not see it either) -> the reading side is shut, which wakes the read in flight (or the
// next one) with the end, as if it had seen it itself; true then. Bytes queued, or nothing yet: false.
inline bool wake_on_unseen_end(boost::asio::ip::tcp::socket& sock) {
  char c;
  const auto r = ::recv(sock.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (r > 0) return false;  // bytes wait: the read takes them
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return false;  // still there
  boost::system::error_code ignored;
  sock.shutdown(boost::asio::ip::tcp::socket::shutdown_receive, ignored);
  return true;
}

}  // namespace sw::net
