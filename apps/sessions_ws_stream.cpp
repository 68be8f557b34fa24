// sessions-ws-stream: streams a WAV file (any rate, any channel count) to a running sessions-ws at real-time
// pace (or 2x with --fast, the server's limit), printing partials in place and finals line by line.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "apps/audio_file.hpp"
#include "net/client.hpp"
#include "net/url.hpp"
#include "proto/json.hpp"
#include "proto/rapidjson.hpp"
#include "proto/token.hpp"

namespace {

const char* usage =
    "Usage: sessions-ws-stream [options] FILE.wav\n"
    "       sessions-ws-stream [options] --watch SECONDS   (a viewer: prints the room's transcripts, sends no audio)\n"
    "  --url URL        server base URL (default ws://localhost:3001)\n"
    "  --token JWT      transcription token; or mint one with:\n"
    "  --secret S       TRANSCRIPTION_JWT_SECRET (default: from the environment)\n"
    "  --room SLUG      room (default demo)   --identity ID (default cli)\n"
    "  --fast           stream at 2x real time (the server's limit) instead of real time\n"
    "  --ca FILE        CA file for wss://\n"
    "Exit codes: 0 done, 1 connection or protocol failure, 2 bad arguments or unreadable audio.\n";

// What goes to the terminal: the room's texts and names as they are, but every control character (C0, DEL, C1:
// an escape sequence could retitle, clear or rewrite the terminal) as U+FFFD. The server sends valid UTF-8.
std::string printable(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (const auto n = sw::control_at(s, i)) {
      out += "\xef\xbf\xbd";
      i += n - 1;
    } else {
      out += s[i];
    }
  }
  return out;
}

struct printer {
  bool tty = ::isatty(1);
  bool partial_shown = false;
  // Returns false when the message says the stream is over with an error.
  void on(const std::string& json) {
    rapidjson::Document d;
    if (!sw::parse_json(d, json) || !d.IsObject() || !d.HasMember("type") || !d["type"].IsString()) return;
    std::string type = d["type"].GetString();
    auto str = [&](const char* k) {
      return d.HasMember(k) && d[k].IsString() ? printable(std::string(d[k].GetString(), d[k].GetStringLength())) : "";
    };
    if (type == "transcript_partial") {
      if (tty) {
        std::cout << "\r\033[K… " << str("text") << std::flush;
        partial_shown = true;
      }
    } else if (type == "transcript_final") {
      if (partial_shown) std::cout << "\r\033[K";
      partial_shown = false;
      std::cout << "[" << str("speakerName") << "] " << str("text") << std::endl;
    } else if (type == "error" || type == "warning") {
      std::cerr << type << ": " << str("code") << ": " << str("message") << std::endl;
    } else if (type == "stt_status") {
      std::cerr << "stt " << str("status") << " (" << str("provider") << ")" << std::endl;
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string url = "ws://localhost:3001", token, room = "demo", identity = "cli", file, ca;
  std::string secret = std::getenv("TRANSCRIPTION_JWT_SECRET") ? std::getenv("TRANSCRIPTION_JWT_SECRET") : "";
  bool fast = false;
  long watch = -1;  // --watch: seconds to view the room (0: until the server closes)
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "sessions-ws-stream: " << a << " needs a value\n" << usage;
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::cout << usage;
      return 0;
    } else if (a == "--url")
      url = next();
    else if (a == "--token")
      token = next();
    else if (a == "--secret")
      secret = next();
    else if (a == "--room")
      room = next();
    else if (a == "--identity")
      identity = next();
    else if (a == "--ca")
      ca = next();
    else if (a == "--fast")
      fast = true;
    else if (a == "--watch") {
      auto v = next();
      char* end = nullptr;
      watch = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || watch < 0) {
        std::cerr << "sessions-ws-stream: --watch needs a whole number of seconds\n" << usage;
        return 2;
      }
    } else if (!a.empty() && a[0] == '-') {
      std::cerr << "sessions-ws-stream: unknown option " << a << "\n" << usage;
      return 2;
    } else
      file = a;
  }
  if ((file.empty() == (watch < 0)) || (token.empty() && secret.empty())) {
    std::cerr << "sessions-ws-stream: a WAV file (or --watch) and --token (or --secret / TRANSCRIPTION_JWT_SECRET) "
                 "are needed\n"
              << usage;
    return 2;
  }
  if (auto u = sw::net::parse_url(url); !u || (u->scheme != "ws" && u->scheme != "wss")) {
    std::cerr << "sessions-ws-stream: --url needs a ws:// or wss:// URL, not '" << sw::net::shown_url(url) << "'\n"
              << usage;
    return 2;
  }
  std::vector<std::int16_t> pcm;
  try {
    if (!file.empty()) pcm = sw::load_audio(file);
  } catch (const std::exception& e) {
    std::cerr << "sessions-ws-stream: " << e.what() << "\n";
    return 2;
  }
  if (token.empty()) {
    sw::token_claims c;
    c.session_slug = room;
    c.identity = identity;
    token = sw::mint_token(c, secret, static_cast<std::int64_t>(std::time(nullptr)) + 3600);
  }
  while (!url.empty() && url.back() == '/') url.pop_back();
  sw::net::client_options opts;
  opts.ca_file = ca;
  printer out;
  try {
    auto ws =
        sw::net::ws_client::connect(url + "/api/realtime/transcribe?token=" + sw::net::percent_encode(token), opts);
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(watch > 0 ? watch : 1L << 30);
    while (watch >= 0 && std::chrono::steady_clock::now() < until) {
      auto m = ws->read(std::chrono::milliseconds(200));
      if (m.kind == sw::net::ws_client::message::text) out.on(m.data);
      if (m.kind == sw::net::ws_client::message::closed) {
        std::cerr << "sessions-ws-stream: closed by the server (" << m.close_code << " " << printable(m.close_reason)
                  << ")\n";
        return m.close_code == 1000 || m.close_code == 1001 ? 0 : 1;
      }
    }
    const std::size_t frame = 320;  // 20 ms
    auto period = std::chrono::microseconds(fast ? 10'000 : 20'000);
    auto next = std::chrono::steady_clock::now();
    for (std::size_t off = 0; off < pcm.size(); off += frame) {
      auto n = std::min(frame, pcm.size() - off);
      ws->send_binary(pcm.data() + off, n * 2);
      for (;;) {
        auto m = ws->read(std::chrono::milliseconds(0));
        if (m.kind == sw::net::ws_client::message::text) {
          out.on(m.data);
          continue;
        }
        if (m.kind == sw::net::ws_client::message::closed) {
          std::cerr << "sessions-ws-stream: closed by the server (" << m.close_code << " " << printable(m.close_reason)
                    << ")\n";
          return 1;
        }
        break;
      }
      next += period;
      std::this_thread::sleep_until(next);
    }
    ws->send_text(R"({"type":"stop"})");
    for (;;) {
      auto m = ws->read(std::chrono::seconds(30));
      if (m.kind == sw::net::ws_client::message::text) {
        out.on(m.data);
      } else if (m.kind == sw::net::ws_client::message::closed) {
        return m.close_code == 1000 ? 0 : 1;
      } else {
        std::cerr << "sessions-ws-stream: no close from the server after stop\n";
        return 1;
      }
    }
  } catch (const sw::net::upgrade_rejected& e) {
    std::cerr << "sessions-ws-stream: rejected with HTTP " << e.status << ": " << printable(e.body) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "sessions-ws-stream: " << e.what() << "\n";
    return 1;
  }
}
