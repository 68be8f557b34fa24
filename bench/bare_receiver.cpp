// bare_receiver: the W0 floor of script/bench. What merely receiving the loadgen's frames costs on this machine: one
// epoll thread accepts WebSocket upgrades (answers 101 with the accept key, nothing else) and then only recv()s,
// discarding everything. Its CPU per frame, read by sessions-ws-loadgen --floor --server-pid, is the floor the server's
// cost per relayed frame is compared with.
//   bare_receiver PORT     (runs until SIGTERM or SIGINT)
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>

namespace {

volatile sig_atomic_t stop = 0;

std::string accept_key(const std::string& key) {
  const std::string magic = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(magic.data()), magic.size(), digest);
  unsigned char out[64];
  const int n = EVP_EncodeBlock(out, digest, SHA_DIGEST_LENGTH);
  return std::string(reinterpret_cast<char*>(out), static_cast<std::size_t>(n));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: bare_receiver PORT\n");
    return 2;
  }
  signal(SIGTERM, [](int) { stop = 1; });
  signal(SIGINT, [](int) { stop = 1; });
  const int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(std::atoi(argv[1])));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(ls, 4096) != 0) {
    std::perror("bare_receiver: listen");
    return 1;
  }
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
      if (h->second.find("\r\n\r\n") == std::string::npos) continue;
      std::string key;
      auto k = h->second.find("Sec-WebSocket-Key: ");
      if (k != std::string::npos) key = h->second.substr(k + 19, h->second.find("\r\n", k) - k - 19);
      const std::string res =
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          "Sec-WebSocket-Accept: " +
          accept_key(key) + "\r\n\r\n";
      if (send(fd, res.data(), res.size(), MSG_NOSIGNAL) < 0) close(fd);
      handshaking.erase(h);
    }
  }
  return 0;
}
