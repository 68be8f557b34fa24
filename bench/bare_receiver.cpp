// bare_receiver: the W0 floor of script/bench. What merely receiving the loadgen's frames costs on this machine: one
// epoll thread accepts WebSocket upgrades (answers 101 with the accept key, nothing else) and then only recv()s,
// discarding everything. Its CPU per frame, read by sessions-ws-loadgen --floor --server-pid, is the floor the server's
// cost per relayed frame is compared with.
//   bare_receiver PORT     (runs until SIGTERM or SIGINT)
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_map>

#include "bare_ws.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: bare_receiver PORT\n");
    return 2;
  }
  bare::stop_on_signals();
  const int ls = bare::listen_loopback(std::atoi(argv[1]));
  if (ls < 0) return 1;
  std::unordered_map<int, std::string> handshaking;  // fd -> request bytes so far
  static char buf[65536];
  bare::loop(ls).run([&](int c) { handshaking[c]; },
                     [&](int fd) {
                       const ssize_t r = bare::read_some(fd, buf, sizeof buf);
                       if (r == 0) return;
                       if (r < 0) {
                         handshaking.erase(fd);
                         close(fd);
                         return;
                       }
                       auto h = handshaking.find(fd);
                       if (h == handshaking.end()) return;  // a frame: received, discarded
                       h->second.append(buf, static_cast<std::size_t>(r));
                       const std::string res = bare::upgrade_reply(h->second);
                       if (res.empty()) return;
                       if (send(fd, res.data(), res.size(), MSG_NOSIGNAL) < 0) close(fd);
                       handshaking.erase(h);
                     });
  return 0;
}
