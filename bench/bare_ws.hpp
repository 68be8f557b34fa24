// What the bare benchmark peers (bare_receiver, bare_relay) share: a loopback listener, a one-thread epoll loop
// that accepts and reports readable connections until SIGTERM or SIGINT, and the one answer they give to a
// WebSocket upgrade (101 with the accept key, nothing checked). Bench code only: no limits, no validation.
#pragma once

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "proto/ws_frame.hpp"

namespace bare {

inline volatile sig_atomic_t stopping = 0;

inline void stop_on_signals() {
  signal(SIGTERM, [](int) { stopping = 1; });
  signal(SIGINT, [](int) { stopping = 1; });
  signal(SIGPIPE, SIG_IGN);
}

// recv() for a loop's on_input: the bytes read; 0 when there is nothing to read now (an event can outlive its
// descriptor within a round of the loop, and the number be reused by a connection accepted in the same round); -1
// when the peer is gone or the socket failed.
inline ssize_t read_some(int fd, char* buf, std::size_t n) {
  const ssize_t r = recv(fd, buf, n, 0);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
  return r == 0 ? -1 : r;
}

// One epoll thread over a listening socket.
class loop {
public:
  explicit loop(int listener) : ls_(listener), ep_(epoll_create1(0)) { watch(ls_); }

  // Reports `fd` (a connection of the caller's, say) to run()'s on_input when it is readable.
  void watch(int fd) const {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }

  // Until a signal stops it: each new connection (non-blocking, TCP_NODELAY, watched) to on_accept(fd), each
  // readable watched descriptor to on_input(fd).
  template <class Accept, class Input>
  void run(Accept on_accept, Input on_input) const {
    int one = 1;
    epoll_event events[256];
    while (!stopping) {
      const int n = epoll_wait(ep_, events, 256, 200);
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd != ls_) {
          on_input(fd);
          continue;
        }
        for (;;) {
          const int c = accept4(ls_, nullptr, nullptr, SOCK_NONBLOCK);
          if (c < 0) break;
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          watch(c);
          on_accept(c);
        }
      }
    }
  }

private:
  int ls_, ep_;
};

// A non-blocking listening socket on 127.0.0.1:port, or -1 (after perror).
inline int listen_loopback(int port) {
  const int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (ls < 0 || bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(ls, 4096) != 0) {
    std::perror("listen");
    return -1;
  }
  return ls;
}

// The 101 answer to the upgrade request `req` once it is whole (ends in an empty line); empty while it is not.
inline std::string upgrade_reply(const std::string& req) {
  if (req.find("\r\n\r\n") == std::string::npos) return {};
  std::string key;
  const auto k = req.find("Sec-WebSocket-Key: ");
  if (k != std::string::npos) key = req.substr(k + 19, req.find("\r\n", k) - k - 19);
  return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
         sw::ws::accept_key(key) + "\r\n\r\n";
}

}  // namespace bare
