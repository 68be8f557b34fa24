// relay_latency: what the Gladia relay adds between a client's audio frame and the upstream receiving it,
// and the server's CPU per stream. The real sessions-ws binary runs as its own process against the fake
// Gladia (tests/fakes); S clients stream 20 ms frames at real-time pace over loopback.
//
//   relay_latency [--streams S] [--seconds D] [--server-cpu C]
// --server-cpu pins the server (and the floor's reader) to core C; run the tool itself on the other core(s), e.g.
// `taskset -c 1 build/bench/relay_latency --server-cpu 0`, so that the server's CPU is its own.
// Latency of a chunk = fake receives the ~100 ms chunk - client sent the frame that completed it (the relay
// re-chunks 20 ms frames into 100 ms upstream frames, so earlier frames of a chunk wait by design).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <numeric>
#include <thread>

#include "tests/fakes/fake_gladia.hpp"
#include "tests/support/harness.hpp"

namespace {

using clock_type = std::chrono::steady_clock;
int server_cpu = -1;  // --server-cpu

void pin_to_server_cpu() {
  if (server_cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(server_cpu, &set);
  sched_setaffinity(0, sizeof set, &set);
}
using namespace std::chrono_literals;

double process_cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto p = s.rfind(')');
  if (p == std::string::npos) return 0;
  std::istringstream in(s.substr(p + 2));
  std::string x;
  unsigned long long ut = 0, st = 0;
  for (int i = 3; i <= 15; ++i) {
    in >> x;
    if (i == 14) ut = std::stoull(x);
    if (i == 15) st = std::stoull(x);
  }
  return static_cast<double>(ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

long rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return 0;
}

int free_port() {
  sw::test::harness probe({}, std::nullopt);
  return probe.port;
}

// A lean WebSocket client for load: a blocking handshake, then a pre-masked binary frame written with one
// send per frame. The tests' ws_client runs an io_context per call, which at 50 000 frames/s would cost the
// machine more than the server under test does.
class raw_ws {
public:
  raw_ws(int port, const std::string& target, int stream) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error(std::string("connect: ") + std::strerror(errno));
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::string req = "GET " + target +
                      " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    write_all(req.data(), req.size());
    // 0x82: a final binary frame; 0x80 | 126: masked, 16-bit length next; then the key and the masked payload.
    std::string payload(640, '\0');
    std::memcpy(&payload[0], &stream, sizeof stream);  // the first bytes name the stream (maps fake sessions back)
    const unsigned char key[4] = {static_cast<unsigned char>(stream), 0x13, static_cast<unsigned char>(stream >> 8),
                                  0xc7};
    frame_ = {'\x82', static_cast<char>(0x80 | 126), static_cast<char>(640 >> 8), static_cast<char>(640 & 0xff)};
    frame_.append(reinterpret_cast<const char*>(key), 4);
    for (std::size_t j = 0; j < payload.size(); ++j) frame_.push_back(static_cast<char>(payload[j] ^ key[j % 4]));
  }
  raw_ws(raw_ws&& o) noexcept : fd_(std::exchange(o.fd_, -1)), frame_(std::move(o.frame_)) {}
  raw_ws(const raw_ws&) = delete;
  raw_ws& operator=(const raw_ws&) = delete;
  raw_ws& operator=(raw_ws&&) = delete;
  ~raw_ws() {
    if (fd_ >= 0) ::close(fd_);
  }

  // Reads (blocking, bounded) until `needle` has appeared in what the server sent.
  void wait_for(const std::string& needle, std::chrono::milliseconds timeout) {
    timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string seen;
    char buf[4096];
    while (seen.find(needle) == std::string::npos) {
      auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) throw std::runtime_error("the server did not send " + needle + ": " + seen.substr(0, 200));
      seen.append(buf, static_cast<std::size_t>(n));
    }
    if (seen.rfind("HTTP/1.1 101", 0) != 0) throw std::runtime_error("upgrade refused: " + seen.substr(0, 200));
  }
  void send_frame() { write_all(frame_.data(), frame_.size()); }
  // Reads whatever the server sent so far, without waiting.
  void drain() {
    char buf[16384];
    while (::recv(fd_, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
  }
  void close() {
    const char frame[] = {'\x88', '\x82', 0, 0, 0, 0, '\x03', '\xe8'};  // close 1000, masked with a zero key
    write_all(frame, sizeof frame);
    ::shutdown(fd_, SHUT_WR);
  }

private:
  void write_all(const char* p, std::size_t n) {
    while (n > 0) {
      auto w = ::send(fd_, p, n, MSG_NOSIGNAL);
      if (w < 0) throw std::runtime_error(std::string("send: ") + std::strerror(errno));
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  }

  int fd_ = -1;
  std::string frame_;
};

double thread_cpu_seconds() {
  rusage r{};
  getrusage(RUSAGE_THREAD, &r);
  return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

// Calls send(i, k) for frame k of every stream i at its due time, from two threads; returns their CPU seconds.
// Streams are spread evenly over the 20 ms frame period, as independent participants are; sending all of them at
// the same instant would measure the queue of a synthetic burst instead of the relay. A frame due within 100 us
// goes out without a sleep first: the latency is measured from the actual send, and a sleep per frame would cost
// the machine more than the server does.
template <class Send>
double paced(int streams, int frames, clock_type::time_point start, Send send) {
  const int threads = std::min(2, streams);
  std::vector<double> cpu(threads, 0.0);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int k = 0; k < frames; ++k) {
        for (int i = t; i < streams; i += threads) {
          auto due = start + k * 20ms + i * std::chrono::microseconds(20'000) / streams;
          if (due - clock_type::now() > 100us) std::this_thread::sleep_until(due);
          send(i, k);
        }
      }
      cpu[t] = thread_cpu_seconds();
    });
  for (auto& t : ts) t.join();
  return std::accumulate(cpu.begin(), cpu.end(), 0.0);
}

// What moving the client frames alone costs this machine: the same paced sends over loopback TCP to a reader that
// only receives them (one epoll thread, no WebSocket parsing, nothing forwarded). No relay can cost less.
void loopback_floor(int streams, int seconds) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (ls < 0 || bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(ls, 4096) != 0 ||
      getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error(std::string("floor: listen: ") + std::strerror(errno));
  std::vector<int> out, in;
  int ep = epoll_create1(0);
  for (int i = 0; i < streams; ++i) {
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
      throw std::runtime_error(std::string("floor: connect: ") + std::strerror(errno));
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    out.push_back(c);
    int s = accept(ls, nullptr, nullptr);
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = s;
    epoll_ctl(ep, EPOLL_CTL_ADD, s, &e);
    in.push_back(s);
  }
  std::atomic<bool> done{false};
  double reader_cpu = 0;
  std::thread reader([&] {
    pin_to_server_cpu();
    epoll_event ev[256];
    std::vector<char> buf(65536);
    while (!done) {
      int n = epoll_wait(ep, ev, 256, 50);
      for (int j = 0; j < n; ++j) (void)!::recv(ev[j].data.fd, buf.data(), buf.size(), 0);
    }
    reader_cpu = thread_cpu_seconds();
  });
  const std::string frame(644, '\x82');  // the size of a masked 640-byte binary frame
  auto start = clock_type::now() + 50ms;
  double gen_cpu = paced(streams, seconds * 50, start,
                         [&](int i, int) { (void)!::send(out[i], frame.data(), frame.size(), MSG_NOSIGNAL); });
  auto wall = std::chrono::duration<double>(clock_type::now() - start).count();
  done = true;
  reader.join();
  for (int fd : out) ::close(fd);
  for (int fd : in) ::close(fd);
  ::close(ep);
  ::close(ls);
  std::printf(
      "loopback floor: %d streams x %d s of 644-byte sends to a reader that only receives: generator %.2f cores, "
      "reader %.2f cores\n",
      streams, seconds, gen_cpu / wall, reader_cpu / wall);
}

void run(int streams, int seconds) {
  sw::test::fake_gladia::options fo;
  fo.stagger_finals = true;  // independent participants' utterances end at different moments
  sw::test::fake_gladia fake(fo);
  fake.record_arrivals(true);
  int port = free_port();
  pid_t pid = fork();
  if (pid == 0) {
    pin_to_server_cpu();
    setenv("PORT", std::to_string(port).c_str(), 1);
    setenv("HOST", "127.0.0.1", 1);
    setenv("TRANSCRIPTION_JWT_SECRET", sw::test::secret.c_str(), 1);
    setenv("GLADIA_API_URL", fake.url().c_str(), 1);
    setenv("GLADIA_API_KEY", "fake-gladia-key", 1);
    setenv("MAX_STREAMS", "100000", 1);
    setenv("MAX_STREAMS_PER_ROOM", "100000", 1);
    setenv("LOG_LEVEL", "error", 1);
    setenv("DATABASE_URL", "none", 1);
    execl(SESSIONS_WS_BIN, SESSIONS_WS_BIN, static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 200; ++i) {
    try {
      if (sw::net::http_fetch("http://127.0.0.1:" + std::to_string(port) + "/health").status == 200) break;
    } catch (...) {
      std::this_thread::sleep_for(25ms);
    }
  }
  std::vector<raw_ws> cs;
  cs.reserve(streams);
  for (int i = 0; i < streams; ++i)
    cs.emplace_back(port,
                    "/api/realtime/transcribe?token=" +
                        sw::test::harness::token("bench-" + std::to_string(i), "p" + std::to_string(i)),
                    i);
  for (int i = 0; i < streams; ++i) cs[i].wait_for("\"ready\"", 30s);
  const int frames = seconds * 50;
  // sent[stream][k] = when frame k (ending at offset 640*(k+1)) left the client
  std::vector<std::vector<clock_type::time_point>> sent(streams, std::vector<clock_type::time_point>(frames));
  auto cpu0 = process_cpu_seconds(pid);
  auto self0 = process_cpu_seconds(getpid());
  auto start = clock_type::now() + 50ms;
  paced(streams, frames, start, [&](int i, int k) {
    sent[i][k] = clock_type::now();
    cs[i].send_frame();
    if (k % 10 == i % 10) cs[i].drain();  // read what the server sent, every 200 ms
  });
  auto wall = std::chrono::duration<double>(clock_type::now() - start).count();
  auto cpu = process_cpu_seconds(pid) - cpu0;
  auto self_cpu = process_cpu_seconds(getpid()) - self0;
  auto rss = rss_kib(pid);
  std::this_thread::sleep_for(300ms);
  // map fake sessions to streams by their first bytes
  std::map<std::string, int> owner;
  for (auto& id : fake.session_ids()) {
    auto a = fake.audio(id);
    if (a.size() >= sizeof(int)) {
      int i;
      std::memcpy(&i, a.data(), sizeof i);
      owner[id] = i;
    }
  }
  std::vector<double> lat;
  for (auto& a : fake.arrivals()) {
    auto it = owner.find(a.session);
    if (it == owner.end() || a.end % 640 != 0) continue;
    int k = static_cast<int>(a.end / 640) - 1;
    if (k < 0 || k >= frames) continue;
    lat.push_back(std::chrono::duration<double, std::milli>(a.at - sent[it->second][k]).count());
  }
  std::sort(lat.begin(), lat.end());
  auto q = [&](double p) { return lat.empty() ? 0.0 : lat[static_cast<std::size_t>(p * (lat.size() - 1))]; };
  std::printf(
      "relay: %d streams x %d s of 20 ms frames: %zu chunks, added latency p50 %.3f ms, p99 %.3f ms, max %.3f "
      "ms; server CPU %.3f s over %.1f s = %.2f ms CPU per stream-second; server RSS %ld MiB; load generator "
      "and fake CPU %.3f s\n",
      streams, seconds, lat.size(), q(0.5), q(0.99), lat.empty() ? 0 : lat.back(), cpu, wall,
      cpu / wall / streams * 1000.0, rss / 1024, self_cpu);
  for (auto& c : cs) c.close();
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> streams{100, 300, 1000};
  int seconds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--streams")) streams = {std::atoi(argv[i + 1])};
    if (!std::strcmp(argv[i], "--seconds")) seconds = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--server-cpu")) server_cpu = std::atoi(argv[i + 1]);
  }
  signal(SIGPIPE, SIG_IGN);
  for (int s : streams) {
    loopback_floor(s, seconds);
    run(s, seconds);
  }
  return 0;
}
