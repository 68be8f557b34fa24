// bare_sender: the floor of the load tool's own cost (issue 14). What merely sending the loadgen's frames costs on
// this machine: N connections to a WebSocket server (bench/bare_receiver), each sent a 640-byte masked frame every
// 20 ms from one thread on a 1 ms tick, nothing parsed, nothing measured per frame, nothing received. On loopback
// the sender also pays the receiver's TCP receive path (it runs in the sender's softirq) and its wake-up, so this
// is the least a load tool on the same machine can cost per frame. Two ways to send: a sendmsg per frame (each),
// or a tick's frames in one io_uring submission (uring), as sessions-ws-loadgen does by default.
//   bare_sender PORT N SECONDS each|uring     prints one line: frames/s, CPU (cores), µs per frame, late ticks
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#ifdef SW_HAVE_LIBURING
#include <liburing.h>
#endif

namespace {

double now_s() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

double cpu_s() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) * 1e-6;
}

int die(const char* what) {
  std::perror(what);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 || (std::strcmp(argv[4], "each") != 0 && std::strcmp(argv[4], "uring") != 0)) {
    std::fprintf(stderr, "usage: bare_sender PORT N SECONDS each|uring\n");
    return 2;
  }
  const int port = std::atoi(argv[1]);
  const int n = std::atoi(argv[2]);
  const double seconds = std::atof(argv[3]);
  const bool uring = std::strcmp(argv[4], "uring") == 0;
  if (port <= 0 || port > 65535 || n <= 0 || seconds <= 0) {
    std::fprintf(stderr, "bare_sender: PORT, N and SECONDS must be positive\n");
    return 2;
  }
  std::vector<int> fds;
  for (int i = 0; i < n; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return die("connect");
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const std::string req =
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "
        "YmFyZS1zZW5kZXItMDAwMQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    if (write(fd, req.data(), req.size()) != static_cast<ssize_t>(req.size())) return die("write");
    char buf[512];
    if (read(fd, buf, sizeof buf) <= 0) return die("read 101");
    fds.push_back(fd);
  }
#ifdef SW_HAVE_LIBURING
  io_uring ring{};
  if (uring && io_uring_queue_init(4096, &ring, 0) != 0) {
    std::fprintf(stderr, "bare_sender: io_uring refused by the kernel\n");
    return 1;
  }
#else
  if (uring) {
    std::fprintf(stderr, "bare_sender: built without liburing\n");
    return 1;
  }
#endif
  // a 640-byte masked binary frame: 4 bytes of header, the key, 632 bytes of payload (its content does not matter)
  static std::uint8_t frame[640];
  frame[0] = 0x82;
  frame[1] = 0x80 | 126;
  frame[2] = 632 >> 8;
  frame[3] = 632 & 0xff;
  iovec iov{frame, sizeof frame};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  long sent = 0, short_sends = 0, late = 0, tick = 0;
  const double t0 = now_s(), c0 = cpu_s();
  while (now_s() - t0 < seconds) {
    // tick k sends the connections of slot k % 20 (each connection every 20 ms)
    for (int i = static_cast<int>(tick % 20); i < n; i += 20) {
      if (!uring) {
        if (sendmsg(fds[static_cast<std::size_t>(i)], &msg, MSG_DONTWAIT) != 640) ++short_sends;
      } else {
#ifdef SW_HAVE_LIBURING
        io_uring_sqe* e = io_uring_get_sqe(&ring);
        io_uring_prep_sendmsg(e, fds[static_cast<std::size_t>(i)], &msg, MSG_DONTWAIT);
#endif
      }
      ++sent;
    }
#ifdef SW_HAVE_LIBURING
    if (uring) {
      io_uring_submit(&ring);
      io_uring_cqe* c = nullptr;
      while (io_uring_peek_cqe(&ring, &c) == 0) {
        if (c->res != 640) ++short_sends;
        io_uring_cqe_seen(&ring, c);
      }
    }
#endif
    ++tick;
    const double wait = t0 + static_cast<double>(tick) * 0.001 - now_s();
    if (wait > 0) {
      timespec ts{0, static_cast<long>(wait * 1e9)};
      nanosleep(&ts, nullptr);
    } else if (wait < -0.005) {
      ++late;
    }
  }
  const double wall = now_s() - t0, cpu = cpu_s() - c0;
  std::printf(
      "bare_sender %s: %d connections, %.0f frames/s, %.3f cores, %.2f us per frame, %ld of %ld ticks over 5 ms "
      "late, %ld short sends\n",
      uring ? "uring" : "each", n, static_cast<double>(sent) / wall, cpu / wall, cpu / static_cast<double>(sent) * 1e6,
      late, tick, short_sends);
  return 0;
}
