#include "config/config.hpp"

#include <arpa/inet.h>
#include <sched.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <thread>

namespace sw {

const std::vector<setting_doc>& settings() {
  static const std::vector<setting_doc> docs = {
      {"HOST", "0.0.0.0", "address to listen on"},
      {"PORT", "3001", "TCP port for HTTP, WebSocket and (when configured) TLS"},
      {"TLS_CERT_FILE", "", "PEM certificate chain; with TLS_KEY_FILE enables TLS on the same port"},
      {"TLS_KEY_FILE", "", "PEM private key"},
      {"CORS_ALLOW_ORIGIN", "*", "Access-Control-Allow-Origin of every HTTP response"},
      {"TRANSCRIPTION_JWT_SECRET", "(required)", "HS256 secret of the participants' transcription tokens"},
      {"SERVICE_API_SECRET", "", "bearer secret of the service routes (/api/transcription/*)"},
      {"MAX_STREAMS", "1000", "participant streams admitted by the server"},
      {"MAX_STREAMS_PER_ROOM", "50", "participant streams admitted per sessionSlug"},
      {"MAX_STREAMS_PER_USER", "5", "participant streams admitted per user (sub, else identity)"},
      {"AUDIO_MAX_FRAMES_PER_SECOND", "250",
       "audio frames a stream may send a second, whatever their size (4 s of it at once); past it frames are dropped, "
       "and a client with 4 s of it dropped within one second is closed 1008. WebSocket frames of any kind (pings, "
       "continuations included): 8 times as many, past which the client is closed 1008"},
      {"CLIENT_SEND_QUEUE_BYTES", "1048576", "outgoing queue per client; partials skipped above half, 4409 when full"},
      {"SOCKET_SEND_BUFFER_BYTES", "0", "SO_SNDBUF of client sockets; 0 keeps the kernel's autotuning"},
      {"TRUSTED_PROXIES", "", "comma-separated addresses or CIDR networks of proxies whose X-Forwarded-For is logged"},
      {"WS_PING_INTERVAL_MS", "15000", "server ping interval"},
      {"WS_PONG_TIMEOUT_MS", "45000", "close 4408 when no pong arrived for this long"},
      {"WS_CLOSE_TIMEOUT_MS", "5000", "a close handshake that takes longer ends the TCP connection"},
      {"OVERLOAD_BACKLOG_MS", "1000",
       "this much of a browser's audio waiting unread for a stream at five checks in a row, a second apart, means the "
       "server cannot keep up: the newest tenth of the streams is closed 1013 (again every 5 s while streams still "
       "report) "
       "and upgrades get 503 meanwhile (0: never; else at least 500)"},
      {"MEMORY_TRIM_INTERVAL_MS", "10000", "the heap's free pages go back to the system this often (0: never)"},
      {"HTTP_REQUEST_TIMEOUT_MS", "15000", "TLS handshake + first request, and each response, must finish within"},
      {"HTTP_IDLE_TIMEOUT_MS", "60000", "idle keep-alive HTTP connections are closed after"},
      {"SHUTDOWN_TIMEOUT_MS", "15000",
       "on SIGTERM/SIGINT: bound for draining streams, then for writing pending finals"},
      {"STT_PROVIDER", "gladia if GLADIA_API_KEY is set, else local",
       "gladia | local (offline PocketSphinx, US English) | none (streams report stt_unavailable)"},
      {"LOCAL_STT_MAX_STREAMS", "2 x cores", "concurrent offline recognitions; beyond it a stream gets stt_busy"},
      {"LOCAL_STT_THREADS", "cores",
       "offline recognitions decoding at once; each such thread loads the language model once and its streams "
       "take turns on it"},
      {"GLADIA_API_URL", "https://api.gladia.io",
       "Gladia API base URL (http:// and ws:// work too, for gateways and tests)"},
      {"GLADIA_API_KEY", "", "Gladia API key (x-gladia-key)"},
      {"GLADIA_REGION", "", "us-west | eu-west (query parameter of the session init)"},
      {"GLADIA_MODEL", "solaria-1", "Gladia model"},
      {"GLADIA_LANGUAGES", "", "comma-separated ISO 639-1 codes; empty = automatic detection with code switching"},
      {"GLADIA_ENDPOINTING", "0.3", "seconds of silence that close an utterance (0.01-10)"},
      {"GLADIA_MAX_DURATION_WITHOUT_ENDPOINTING", "15", "longest utterance in seconds (5-60)"},
      {"GLADIA_CA_FILE", "", "extra CA file for the Gladia TLS connection"},
      {"STT_REPLAY_BUFFER_BYTES", "1920000",
       "unacknowledged audio kept for replay after a reconnect (oldest dropped, counted)"},
      {"STT_DRAIN_TIMEOUT_MS", "10000", "after stop: bound for the upstream to deliver its last finals"},
      {"STT_ACK_TIMEOUT_MS", "10000",
       "audio sent and nothing acknowledged for this long: the upstream connection is dropped, reconnected and "
       "the unacknowledged audio replayed"},
      {"STT_CHUNK_FLUSH_MS", "100",
       "audio waiting in a partial upstream chunk goes after this long without more (checked every quarter of it)"},
      {"LIVEKIT_URL", "",
       "http(s) base URL of the LiveKit server, for room transcription (/api/transcription/start); with "
       "LIVEKIT_API_KEY, LIVEKIT_API_SECRET and PUBLIC_BASE_URL"},
      {"LIVEKIT_API_KEY", "", "LiveKit API key (signs the access tokens of egress and RoomService calls)"},
      {"LIVEKIT_API_SECRET", "", "LiveKit API secret (also verifies LiveKit's webhooks)"},
      {"PUBLIC_BASE_URL", "", "ws(s):// base URL at which LiveKit's egress reaches this service (/egress/audio)"},
      {"LIVEKIT_EGRESS_MODE", "track",
       "track: one Track Egress per published audio track (exact attribution) | room: one audio egress of the room "
       "mix (attribution by active speaker)"},
      {"RECONCILE_INTERVAL_MS", "30000", "how often the egresses of a transcribed room are checked against LiveKit"},
      {"LIVEKIT_CA_FILE", "", "extra CA file for the LiveKit TLS connection"},
      {"LIVEKIT_TIMEOUT_MS", "10000", "bound on each LiveKit API call (connect, TLS, answer)"},
      {"DATABASE_URL", "sqlite3://db=./data/sessions.db",
       "postgresql://... or postgres://... (PostgreSQL), sqlite3://db=PATH (SQLite), or none (no persistence)"},
      {"PERSIST_JOURNAL_DIR", "./data/journal", "local journal of accepted finals (fsync'd, replayed at start-up)"},
      {"PERSIST_JOURNAL_SEGMENT_BYTES", "4194304",
       "journal segment size: segments rotate past it and are deleted once nothing in them is live"},
      {"PERSIST_FLUSH_MS", "300", "finals are written at least this often"},
      {"PERSIST_BATCH", "100", "finals per database transaction"},
      {"PERSIST_MAX_PENDING", "100000", "finals held in memory; beyond it they wait in the journal only"},
      {"PERSIST_MAX_PARKED", "10000",
       "rows set aside (room unknown to the web app's database, or refused by it), retried every 5 s; beyond it "
       "the oldest is given up (persist.abandoned_rows, logged)"},
      {"TRANSCRIPTION_COST_PER_MINUTE", "0.01", "cost per started minute in usage rows"},
      {"IO_THREADS", "the cores this process may use",
       "threads for client and upstream sockets; the actors run on them too"},
      {"LOG_LEVEL", "info", "error | warn | info | debug"},
  };
  return docs;
}

namespace {

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return std::min(CPU_COUNT(&set), 64);
  return static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 64u));
}

// "10.0.0.1, 10.1.0.0/16, ::1" -> each entry checked: an IPv4 or IPv6 address, optionally /prefix within its size.
std::vector<std::string> parse_networks(const char* name, const std::string& value) {
  std::vector<std::string> out;
  std::stringstream in(value);
  for (std::string item; std::getline(in, item, ',');) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (item.empty()) continue;
    auto slash = item.find('/');
    std::string addr = item.substr(0, slash);
    unsigned char buf[16];
    const bool v4 = ::inet_pton(AF_INET, addr.c_str(), buf) == 1;
    const bool v6 = !v4 && ::inet_pton(AF_INET6, addr.c_str(), buf) == 1;
    bool ok = v4 || v6;
    if (ok && slash != std::string::npos) {
      const std::string prefix = item.substr(slash + 1);
      int bits = -1;
      auto [p, ec] = std::from_chars(prefix.data(), prefix.data() + prefix.size(), bits);
      ok = ec == std::errc() && p == prefix.data() + prefix.size() && bits >= 0 && bits <= (v4 ? 32 : 128);
    }
    if (!ok)
      throw config_error(std::string(name) + ": '" + item +
                         "' is not an IPv4 or IPv6 address or network (like 10.0.0.1 or 10.0.0.0/8)");
    out.push_back(item);
  }
  return out;
}

template <class T>
T parse_int(const char* name, const char* text, T min, T max) {
  std::string_view s(text);
  long long value = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (s.empty() || ec != std::errc{} || p != s.data() + s.size() || value < static_cast<long long>(min) ||
      value > static_cast<long long>(max)) {
    std::ostringstream msg;
    msg << name << "=" << text << " is invalid: expected an integer from " << +min << " to " << +max;
    throw config_error(msg.str());
  }
  return static_cast<T>(value);
}

double parse_double(const char* name, const char* text, double min, double max) {
  char* end = nullptr;
  double v = std::strtod(text, &end);
  if (!*text || *end || !(v >= min && v <= max)) {
    std::ostringstream msg;
    msg << name << "=" << text << " is invalid: expected a number from " << min << " to " << max;
    throw config_error(msg.str());
  }
  return v;
}

}  // namespace

config load_config(const std::function<const char*(const char*)>& lookup, bool dev) {
  config c;
  c.dev = dev;
  auto get = [&](const char* name) -> const char* {
    const char* v = lookup(name);
    return v && *v ? v : nullptr;
  };
  auto ms = [&](const char* name, std::chrono::milliseconds& out, long min) {
    if (auto v = get(name)) out = std::chrono::milliseconds(parse_int<long>(name, v, min, 86'400'000L));
  };
  if (auto v = get("HOST")) c.host = v;
  if (auto v = get("PORT")) c.port = parse_int<std::uint16_t>("PORT", v, 0, 65535);
  if (auto v = get("TLS_CERT_FILE")) c.tls_cert_file = v;
  if (auto v = get("TLS_KEY_FILE")) c.tls_key_file = v;
  if (c.tls_cert_file.empty() != c.tls_key_file.empty())
    throw config_error("TLS_CERT_FILE and TLS_KEY_FILE must be set together");
  if (auto v = get("CORS_ALLOW_ORIGIN")) c.cors_allow_origin = v;
  if (auto v = get("TRUSTED_PROXIES")) c.trusted_proxies = parse_networks("TRUSTED_PROXIES", v);
  if (auto v = get("TRANSCRIPTION_JWT_SECRET")) c.jwt_secret = v;
  if (auto v = get("SERVICE_API_SECRET")) c.service_api_secret = v;
  if (auto v = get("MAX_STREAMS")) c.max_streams = parse_int<std::uint32_t>("MAX_STREAMS", v, 1, 1'000'000);
  if (auto v = get("MAX_STREAMS_PER_ROOM"))
    c.max_streams_per_room = parse_int<std::uint32_t>("MAX_STREAMS_PER_ROOM", v, 1, 1'000'000);
  if (auto v = get("MAX_STREAMS_PER_USER"))
    c.max_streams_per_user = parse_int<std::uint32_t>("MAX_STREAMS_PER_USER", v, 1, 1'000'000);
  if (auto v = get("AUDIO_MAX_FRAMES_PER_SECOND"))
    c.audio_max_frames_per_second = parse_int<std::uint32_t>("AUDIO_MAX_FRAMES_PER_SECOND", v, 50, 1'000'000);
  if (auto v = get("CLIENT_SEND_QUEUE_BYTES"))
    c.client_send_queue_bytes = parse_int<std::size_t>("CLIENT_SEND_QUEUE_BYTES", v, 4096, std::size_t{1} << 32);
  if (auto v = get("SOCKET_SEND_BUFFER_BYTES"))
    c.socket_send_buffer = parse_int<int>("SOCKET_SEND_BUFFER_BYTES", v, 0, 64 * 1024 * 1024);
  ms("WS_PING_INTERVAL_MS", c.ws_ping_interval, 10);
  ms("WS_PONG_TIMEOUT_MS", c.ws_pong_timeout, 10);
  ms("WS_CLOSE_TIMEOUT_MS", c.ws_close_timeout, 10);
  ms("OVERLOAD_BACKLOG_MS", c.overload_backlog, 0);
  // A chunk held back in the kernel until its last frame is in (up to ~130 ms of audio) is no backlog: a lower bound
  // would take a server that keeps up for one that cannot.
  if (c.overload_backlog.count() != 0 && c.overload_backlog.count() < 500)
    throw config_error("OVERLOAD_BACKLOG_MS=" + std::to_string(c.overload_backlog.count()) +
                       " is too low: 0 (never shed) or at least 500");
  ms("MEMORY_TRIM_INTERVAL_MS", c.memory_trim_interval, 0);
  ms("HTTP_REQUEST_TIMEOUT_MS", c.http_request_timeout, 100);
  ms("HTTP_IDLE_TIMEOUT_MS", c.http_idle_timeout, 100);
  ms("SHUTDOWN_TIMEOUT_MS", c.shutdown_timeout, 0);
  auto& g = c.gladia;
  if (auto v = get("GLADIA_API_URL")) g.api_url = v;
  if (auto v = get("GLADIA_API_KEY")) g.api_key = v;
  if (auto v = get("GLADIA_REGION")) {
    g.region = v;
    if (g.region != "us-west" && g.region != "eu-west")
      throw config_error("GLADIA_REGION=" + g.region + " is invalid: expected us-west or eu-west");
  }
  if (auto v = get("GLADIA_MODEL")) g.model = v;
  if (auto v = get("GLADIA_LANGUAGES")) {
    std::string list = v, item;
    std::istringstream in(list);
    while (std::getline(in, item, ',')) {
      if (item.empty()) continue;
      if (item.size() < 2 || item.size() > 3 ||
          item.find_first_not_of("abcdefghijklmnopqrstuvwxyz") != std::string::npos)
        throw config_error("GLADIA_LANGUAGES=" + list + " is invalid: expected ISO 639-1 codes like en,fr");
      g.languages.push_back(item);
    }
  }
  if (auto v = get("GLADIA_ENDPOINTING")) g.endpointing = parse_double("GLADIA_ENDPOINTING", v, 0.01, 10);
  if (auto v = get("GLADIA_MAX_DURATION_WITHOUT_ENDPOINTING"))
    g.max_duration_without_endpointing = parse_double("GLADIA_MAX_DURATION_WITHOUT_ENDPOINTING", v, 5, 60);
  if (auto v = get("GLADIA_CA_FILE")) g.ca_file = v;
  if (auto v = get("STT_REPLAY_BUFFER_BYTES"))
    c.stt_replay_buffer_bytes = parse_int<std::size_t>("STT_REPLAY_BUFFER_BYTES", v, 32'000, std::size_t{1} << 31);
  if (c.stt_replay_buffer_bytes % 2)  // PCM16: an odd bound would cut a sample
    throw config_error("STT_REPLAY_BUFFER_BYTES=" + std::to_string(c.stt_replay_buffer_bytes) +
                       " is invalid: expected an even number of bytes (whole 16-bit samples)");
  ms("STT_DRAIN_TIMEOUT_MS", c.stt_drain_timeout, 100);
  ms("STT_ACK_TIMEOUT_MS", c.stt_ack_timeout, 100);
  ms("STT_CHUNK_FLUSH_MS", c.stt_chunk_flush, 1);
  c.stt_provider = g.api_key.empty() ? "local" : "gladia";
  if (auto v = get("STT_PROVIDER")) {
    std::string p = v;
    if (p != "gladia" && p != "local" && p != "none")
      throw config_error("STT_PROVIDER=" + p + " is invalid: expected gladia, local or none");
    c.stt_provider = p == "none" ? "" : p;
  }
  c.local_stt_max_streams = 2 * std::max(1u, std::thread::hardware_concurrency());
  if (auto v = get("LOCAL_STT_MAX_STREAMS"))
    c.local_stt_max_streams = parse_int<std::size_t>("LOCAL_STT_MAX_STREAMS", v, 1, 256);
  c.local_stt_threads = std::max(1u, std::thread::hardware_concurrency());
  if (auto v = get("LOCAL_STT_THREADS")) c.local_stt_threads = parse_int<std::size_t>("LOCAL_STT_THREADS", v, 1, 256);
  if (c.stt_provider == "gladia" && g.api_key.empty()) throw config_error("STT_PROVIDER=gladia needs GLADIA_API_KEY");
  {
    auto& lk = c.livekit;
    if (auto v = get("LIVEKIT_URL")) lk.url = v;
    if (auto v = get("LIVEKIT_API_KEY")) lk.api_key = v;
    if (auto v = get("LIVEKIT_API_SECRET")) lk.api_secret = v;
    if (auto v = get("PUBLIC_BASE_URL")) lk.public_base_url = v;
    const bool any = !lk.url.empty() || !lk.api_key.empty() || !lk.api_secret.empty() || !lk.public_base_url.empty();
    if (any && (lk.url.empty() || lk.api_key.empty() || lk.api_secret.empty() || lk.public_base_url.empty()))
      throw config_error(
          "LiveKit needs all of LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET and PUBLIC_BASE_URL (some are unset)");
    auto starts = [](const std::string& s, const char* p) { return s.rfind(p, 0) == 0; };
    if (!lk.url.empty() && !starts(lk.url, "http://") && !starts(lk.url, "https://"))
      throw config_error("LIVEKIT_URL=" + lk.url + " is invalid: expected http://... or https://...");
    if (!lk.public_base_url.empty() && !starts(lk.public_base_url, "ws://") && !starts(lk.public_base_url, "wss://"))
      throw config_error("PUBLIC_BASE_URL=" + lk.public_base_url + " is invalid: expected ws://... or wss://...");
    if (auto v = get("LIVEKIT_EGRESS_MODE")) {
      std::string m = v;
      if (m != "track" && m != "room")
        throw config_error("LIVEKIT_EGRESS_MODE=" + m + " is invalid: expected track or room");
      lk.egress_mode = m;
    }
    ms("RECONCILE_INTERVAL_MS", lk.reconcile_interval, 1000);
    ms("LIVEKIT_TIMEOUT_MS", lk.timeout, 100);
    if (auto v = get("LIVEKIT_CA_FILE")) lk.ca_file = v;
    if (lk.configured() && c.service_api_secret.empty())
      throw config_error("LiveKit room transcription needs SERVICE_API_SECRET (it signs the egress tokens)");
  }
  if (auto v = get("DATABASE_URL")) {
    std::string u = v;
    if (u == "none") {
      c.persistence = false;
    } else if (u.rfind("postgresql://", 0) == 0 || u.rfind("postgres://", 0) == 0) {
      c.database_url = u;
    } else if (u.rfind("sqlite3://db=", 0) == 0 && u.size() > 13) {
      c.sqlite_path = u.substr(13);
    } else {
      throw config_error("DATABASE_URL=" + u + " is invalid: expected postgresql://..., sqlite3://db=PATH or none");
    }
  }
  if (auto v = get("PERSIST_JOURNAL_DIR")) c.persist_journal_dir = v;
  ms("PERSIST_FLUSH_MS", c.persist_flush, 1);
  if (auto v = get("PERSIST_BATCH")) c.persist_batch = parse_int<std::size_t>("PERSIST_BATCH", v, 1, 10'000);
  if (auto v = get("PERSIST_MAX_PENDING"))
    c.persist_max_pending = parse_int<std::size_t>("PERSIST_MAX_PENDING", v, 10, 10'000'000);
  if (auto v = get("PERSIST_JOURNAL_SEGMENT_BYTES"))
    c.persist_journal_segment_bytes =
        parse_int<std::size_t>("PERSIST_JOURNAL_SEGMENT_BYTES", v, 4096, std::size_t{1} << 30);
  if (auto v = get("PERSIST_MAX_PARKED"))
    c.persist_max_parked = parse_int<std::size_t>("PERSIST_MAX_PARKED", v, 1, 10'000'000);
  if (auto v = get("TRANSCRIPTION_COST_PER_MINUTE"))
    c.cost_per_minute = parse_double("TRANSCRIPTION_COST_PER_MINUTE", v, 0, 1000);
  // One thread per core this process may run on (its affinity mask, so `taskset -c 0` means one): the actors run on
  // the I/O threads (service/io_scheduler), so a frame, the session's decision and the upstream write never cross
  // threads, and more threads than cores would only add switches between them.
  c.io_threads = available_cores();
  if (auto v = get("IO_THREADS")) c.io_threads = parse_int<int>("IO_THREADS", v, 1, 64);
  if (auto v = get("LOG_LEVEL")) {
    std::string l = v;
    if (l != "error" && l != "warn" && l != "info" && l != "debug")
      throw config_error("LOG_LEVEL=" + l + " is invalid: expected error, warn, info or debug");
    c.log_level = l;
  }
  if (c.jwt_secret.empty() && !dev)
    throw config_error("TRANSCRIPTION_JWT_SECRET is not set (use --dev to start with a generated development secret)");
  return c;
}

std::string usage_text() {
  std::ostringstream out;
  out << "Usage: sessions-ws [--dev] [--help] [--version]\n\n"
         "Real-time transcription backend: HTTP + WebSocket (+ TLS) on one port.\n\n"
         "Options:\n"
         "  --dev       start without TRANSCRIPTION_JWT_SECRET: a random development secret is generated and printed\n"
         "  --help      this text\n"
         "  --version   print the version\n\n"
         "Configuration (environment variables):\n";
  std::size_t width = 0;
  for (auto& s : settings()) width = std::max(width, std::string_view(s.name).size());
  for (auto& s : settings()) {
    out << "  " << s.name;
    for (std::size_t i = std::string_view(s.name).size(); i < width + 2; ++i) out << ' ';
    out << s.meaning << " [default: " << (*s.default_value ? s.default_value : "unset") << "]\n";
  }
  out << "\nSignals: SIGTERM or SIGINT drains every stream and exits; SIGHUP loads TLS_CERT_FILE and TLS_KEY_FILE "
         "again\n"
         "for new connections (open ones keep theirs; files that do not load leave the pair in use).\n";
  out << "\nExit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on bad configuration.\n";
  return out.str();
}

}  // namespace sw
