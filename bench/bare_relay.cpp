// bare_relay: the relay floor (R0) of script/bench. W0's bare receiver only takes the frames in; a relay must also
// send them on, read an answer for each chunk and hand transcripts back. This is that work and nothing else, in
// one epoll thread: what relaying the loadgen's frames costs on this machine in system calls, wake-ups and the
// kernel's TCP, against which the server's W1 cost per relayed frame is set. (Its user time is a floor for the
// server's; its kernel time has come out both above and below the server's, as this VM's speed moves.)
//
//   bare_relay relay PORT UPSTREAM_PORT   the relay, run where the server would run (sessions-ws-loadgen --floor
//                                         --server-pid reads its CPU per frame)
//   bare_relay upstream PORT              its upstream, run beside the loadgen
//
// The relay answers each WebSocket upgrade with 101 and opens a TCP connection to the upstream for it (no HTTP, no
// upgrade there). It unmasks each client frame's payload into the stream's chunk, and when 3 200 bytes (100 ms of
// 16 kHz PCM16, the server's chunk) are in, sends them upstream as one masked binary frame. While a chunk fills, the
// client socket's SO_RCVLOWAT is the bytes it still misses, so the read that the chunk's last frame wakes takes all of
// it (the server does the same). From the upstream it reads every message: an ack it drops, a transcript it writes
// to the client as it came. Nothing is parsed as JSON, nothing stored, no actor, no allocation per frame.
//
// The upstream answers each chunk with a Gladia-sized ack, every 3rd with a partial and every 20th with a final
// (Gladia's 300 ms and 2 s of the fake), each a message and a send of its own; transcripts already in the client's
// shape, their text stamped " @<CLOCK_MONOTONIC ns>" so that the loadgen measures their way back as fan-out.
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "bare_ws.hpp"
#include "proto/ws_frame.hpp"

namespace {

constexpr std::size_t chunk_bytes = 3200;
std::uint64_t short_sends = 0;

// A WebSocket frame at the start of `in`, if it is whole: its opcode, payload (offset, length) and wire size.
struct frame {
  int opcode;
  std::size_t at, len, size;
  const std::uint8_t* mask;  // null when unmasked
};

bool next_frame(const std::string& in, std::size_t from, frame& f) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(in.data()) + from;
  const std::size_t avail = in.size() - from;
  if (avail < 2) return false;
  std::size_t len = p[1] & 0x7f, head = 2;
  if (len == 126) {
    if (avail < 4) return false;
    len = (std::size_t{p[2]} << 8) | p[3];
    head = 4;
  } else if (len == 127) {
    if (avail < 10) return false;
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | p[2 + i];
    head = 10;
  }
  const bool masked = (p[1] & 0x80) != 0;
  if (masked) head += 4;
  if (avail < head + len) return false;
  f = {p[0] & 0x0f, from + head, len, head + len, masked ? p + head - 4 : nullptr};
  return true;
}

void send_all(int fd, const char* data, std::size_t n) {
  const ssize_t r = send(fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (r != static_cast<ssize_t>(n)) ++short_sends;  // a floor, not a relay: counted and reported, never retried
}

std::int64_t monotonic_ns() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<std::int64_t>(t.tv_sec) * 1'000'000'000 + t.tv_nsec;
}

struct stream {
  int client = -1, up = -1;
  bool open = false;  // upgraded
  std::string in;     // client bytes not yet taken as frames (the upgrade request, then frames)
  std::string chunk;  // the audio of the upstream chunk being filled
  std::string upin;   // upstream bytes not yet taken as frames
  int lowat = 1;
  std::size_t frame_wire = 0;  // the last client frame's size on the wire
};

class relay {
public:
  relay(const bare::loop& l, int upstream_port) : loop_(l), upstream_port_(upstream_port) {}

  void accept(int c) {
    auto s = std::make_shared<stream>();
    s->client = c;
    s->chunk.reserve(chunk_bytes + 2048);
    by_fd_[c] = s;
  }

  void input(int fd) {
    auto it = by_fd_.find(fd);
    if (it == by_fd_.end()) return;
    const auto s = it->second;
    const ssize_t r = bare::read_some(fd, buf_, sizeof buf_);
    if (r == 0) return;
    if (r < 0) return end(*s);
    if (fd == s->up) return from_upstream(*s, static_cast<std::size_t>(r));
    s->in.append(buf_, static_cast<std::size_t>(r));
    if (!s->open) return upgrade(s);
    from_client(*s);
  }

  void report() const {
    std::printf("bare_relay: %llu chunks upstream, %llu transcripts back, %llu sends short\n",
                static_cast<unsigned long long>(chunks_), static_cast<unsigned long long>(transcripts_),
                static_cast<unsigned long long>(short_sends));
  }

private:
  // Acks dropped, transcripts on to the client as they came.
  void from_upstream(stream& s, std::size_t n) {
    s.upin.append(buf_, n);
    std::size_t at = 0;
    frame f{};
    while (next_frame(s.upin, at, f)) {
      if (f.len > 10 && s.upin.compare(f.at + 9, 10, "transcript") == 0) {
        send_all(s.client, s.upin.data() + at, f.size);
        ++transcripts_;
      }
      at += f.size;
    }
    s.upin.erase(0, at);
  }

  // Once the upgrade request is in: 101, and the stream's upstream connection.
  void upgrade(const std::shared_ptr<stream>& s) {
    const std::string res = bare::upgrade_reply(s->in);
    if (res.empty()) return;
    s->in.clear();
    s->open = true;
    send_all(s->client, res.data(), res.size());
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(upstream_port_));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    s->up = socket(AF_INET, SOCK_STREAM, 0);
    if (s->up < 0 || connect(s->up, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      std::perror("bare_relay: connect upstream");
      return end(*s);
    }
    int one = 1;
    fcntl(s->up, F_SETFL, fcntl(s->up, F_GETFL) | O_NONBLOCK);
    setsockopt(s->up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    by_fd_[s->up] = s;
    loop_.watch(s->up);
  }

  // The client's frames: their audio into the chunk, each whole chunk upstream.
  void from_client(stream& s) {
    std::size_t at = 0;
    frame f{};
    bool closing = false;
    while (next_frame(s.in, at, f)) {
      s.frame_wire = f.size;
      if (f.opcode == 0x8) closing = true;
      if (f.opcode == 0x2) {
        const std::size_t was = s.chunk.size();
        s.chunk.resize(was + f.len);
        sw::ws::mask_copy(reinterpret_cast<std::uint8_t*>(&s.chunk[was]),
                          reinterpret_cast<const std::uint8_t*>(s.in.data()) + f.at, f.len, f.mask, 0);
      }
      at += f.size;
      if (s.chunk.size() >= chunk_bytes) send_chunk(s);
    }
    s.in.erase(0, at);
    if (closing) return end(s);
    // Wake when the chunk's last frame is in: the frames it still misses, less what is here of the next.
    if (s.frame_wire > 0) {
      const std::size_t have = s.chunk.size();
      const std::size_t payload = s.frame_wire > 8 ? s.frame_wire - 8 : 1;
      const std::size_t frames = (chunk_bytes - have + payload - 1) / payload;
      const std::size_t want = frames * s.frame_wire;
      const int lowat = static_cast<int>(want > s.in.size() ? want - s.in.size() : 1);
      if (lowat != s.lowat && setsockopt(s.client, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof lowat) == 0) s.lowat = lowat;
    }
  }

  // The chunk, masked, upstream as one frame.
  void send_chunk(stream& s) {
    const std::size_t n = s.chunk.size();
    wire_.resize(sw::ws::client_header_size(n) + n);
    const auto w = sw::ws::write_client_frame(wire_.data(), sw::ws::opcode::binary, s.chunk.data(), n, 0x12345678);
    send_all(s.up, reinterpret_cast<const char*>(wire_.data()), w);
    s.chunk.clear();
    ++chunks_;
  }

  void end(stream& s) {
    for (int fd : {s.client, s.up})
      if (fd >= 0) {
        close(fd);
        by_fd_.erase(fd);  // last: it may hold the last reference to s
      }
  }

  const bare::loop& loop_;
  int upstream_port_;
  std::unordered_map<int, std::shared_ptr<stream>> by_fd_;
  char buf_[65536];
  std::vector<std::uint8_t> wire_;  // the upstream frame being sent
  std::uint64_t chunks_ = 0, transcripts_ = 0;
};

// A server frame (unmasked text) around `payload`, in `out`.
void text_frame(std::string& out, const char* payload) {
  const std::size_t n = std::strlen(payload);
  std::uint8_t h[10];
  out.assign(reinterpret_cast<const char*>(h), sw::ws::write_server_header(h, sw::ws::opcode::text, n));
  out.append(payload, n);
}

// The upstream: an ack for each chunk, a partial for every 3rd, a final for every 20th; each a send of its own.
class upstream {
public:
  void accept(int c) { conns_[c]; }

  void input(int fd) {
    const ssize_t r = bare::read_some(fd, buf_, sizeof buf_);
    if (r == 0) return;
    auto& c = conns_[fd];
    if (r < 0) {
      conns_.erase(fd);
      close(fd);
      return;
    }
    c.in.append(buf_, static_cast<std::size_t>(r));
    std::size_t at = 0;
    frame f{};
    while (next_frame(c.in, at, f)) {
      at += f.size;
      if (f.opcode == 0x2) answer(fd, c, f.len);
    }
    c.in.erase(0, at);
  }

  static void report() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    std::printf("bare_relay upstream: %.2f s CPU\n",
                static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                    static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6);
  }

private:
  struct conn {
    std::string in;
    std::uint64_t bytes = 0, chunks = 0;
  };

  void answer(int fd, conn& c, std::size_t len) {
    const auto from = c.bytes;
    c.bytes += len;
    ++c.chunks;
    char m[320];
    std::snprintf(m, sizeof m,
                  R"({"type":"audio_chunk","session_id":"bare-%d","created_at":"2026-12-03T00:00:00.000Z",)"
                  R"("acknowledged":true,"error":null,"data":{"byte_range":[%llu,%llu],"time_range":[%.3f,%.3f]}})",
                  fd, static_cast<unsigned long long>(from), static_cast<unsigned long long>(c.bytes),
                  static_cast<double>(from) / 32000, static_cast<double>(c.bytes) / 32000);
    text_frame(out_, m);
    send_all(fd, out_.data(), out_.size());
    const bool final = c.chunks % 20 == 0, partial = !final && c.chunks % 3 == 0;
    if (!partial && !final) return;
    const auto u = c.chunks / 20;
    std::snprintf(m, sizeof m,
                  R"({"type":"transcript_%s","sessionSlug":"bench","utteranceId":"bare-%d-%llu",)"
                  R"("text":"utterance %llu @%lld","isFinal":%s,"speaker":"p%d","speakerId":"p%d",)"
                  R"("speakerName":"p%d","language":"en","start":%.2f,"end":%.2f,"ts":1764720000000})",
                  final ? "final" : "partial", fd, static_cast<unsigned long long>(u),
                  static_cast<unsigned long long>(u), static_cast<long long>(monotonic_ns()), final ? "true" : "false",
                  fd, fd, fd, static_cast<double>(u) * 2, static_cast<double>(c.bytes) / 32000);
    text_frame(out_, m);
    send_all(fd, out_.data(), out_.size());
  }

  std::unordered_map<int, conn> conns_;
  char buf_[65536];
  std::string out_;
};

}  // namespace

int main(int argc, char** argv) {
  bare::stop_on_signals();
  const std::string mode = argc > 1 ? argv[1] : "";
  if (!((mode == "relay" && argc == 4) || (mode == "upstream" && argc == 3))) {
    std::fprintf(stderr, "usage: bare_relay relay PORT UPSTREAM_PORT | bare_relay upstream PORT\n");
    return 2;
  }
  const int ls = bare::listen_loopback(std::atoi(argv[2]));
  if (ls < 0) return 1;
  const bare::loop loop(ls);
  if (mode == "relay") {
    static relay r(loop, std::atoi(argv[3]));  // static: its read buffer is 64 KiB
    loop.run([](int c) { r.accept(c); }, [](int fd) { r.input(fd); });
    r.report();
  } else {
    static upstream u;
    loop.run([](int c) { u.accept(c); }, [](int fd) { u.input(fd); });
    u.report();
  }
  return 0;
}
