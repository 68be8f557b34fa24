// bare_receiver: the W0 floor of script/bench. What merely receiving the loadgen's frames costs on this machine: one
// epoll thread accepts WebSocket upgrades (answers 101 with the accept key, nothing else) and then only recv()s,
// discarding everything. Its CPU per frame, read by sessions-ws-loadgen --floor --server-pid, is the floor the server's
// cost per relayed frame is compared with.
//   bare_receiver PORT     (runs until SIGTERM or SIGINT)
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_map>

#include "bare_ws.hpp"

namespace {
volatile sig_atomic_t stop = 0;
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: bare_receiver PORT\n");
    return 2;
  }
  signal(SIGTERM, [](int) { stop = 1; });
  signal(SIGINT, [](int) { stop = 1; });
  int one = 1;
  const int ls = bare::listen_loopback(std::atoi(argv[1]));
  if (ls < 0) return 1;
  const int ep = epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = ls;
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  std::unordered_map<int, std::string> handshaking;  // fd -> request bytes so far
  static char buf[65536];
  epoll_event events[256];
  while (!stop) {
    const int n = epoll_wait(ep, events, 256, 200);
    for (int i = 0; i < n; ++i) {
      const int fd = events[i].data.fd;
      if (fd == ls) {
        for (;;) {
          const int c = accept4(ls, nullptr, nullptr, SOCK_NONBLOCK);
          if (c < 0) break;
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          handshaking[c];
          epoll_event cev{};
          cev.events = EPOLLIN;
          cev.data.fd = c;
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        }
        continue;
      }
      const ssize_t r = recv(fd, buf, sizeof buf, 0);
      if (r <= 0) {
        handshaking.erase(fd);
        close(fd);
        continue;
      }
      auto h = handshaking.find(fd);
      if (h == handshaking.end()) continue;  // a frame: received, discarded
      h->second.append(buf, static_cast<std::size_t>(r));
      const std::string res = bare::upgrade_reply(h->second);
      if (res.empty()) continue;
      if (send(fd, res.data(), res.size(), MSG_NOSIGNAL) < 0) close(fd);
      handshaking.erase(h);
    }
  }
  return 0;
}
