// Service configuration: every setting comes from the environment (see README / --help).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace sw {

struct config {
  // listening
  std::string host = "0.0.0.0";
  std::uint16_t port = 3001;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string cors_allow_origin = "*";
  // TRUSTED_PROXIES: addresses or CIDR networks of the proxies in front (HAProxy): only from their connections is
  // X-Forwarded-For believed, and then only for logging the client's address.
  std::vector<std::string> trusted_proxies;
  int io_threads = 2;  // IO_THREADS: the sockets' threads, which also run the actors
  // auth
  std::string jwt_secret;          // TRANSCRIPTION_JWT_SECRET
  std::string service_api_secret;  // SERVICE_API_SECRET
  // admission
  std::uint32_t max_streams = 1000;
  std::uint32_t max_streams_per_room = 50;
  std::uint32_t max_streams_per_user = 5;
  std::uint32_t audio_max_frames_per_second = 250;  // AUDIO_MAX_FRAMES_PER_SECOND (audio_guard)
  // per-connection limits and liveness
  std::size_t client_send_queue_bytes = 1024 * 1024;
  int socket_send_buffer = 0;  // SO_SNDBUF of accepted sockets; 0 = kernel default (autotuned)
  std::chrono::milliseconds ws_ping_interval{15'000};
  std::chrono::milliseconds ws_pong_timeout{45'000};
  std::chrono::milliseconds ws_close_timeout{5'000};
  // this much of a browser's audio unread for a stream at five checks in a row: the server is behind; shed (0: never)
  std::chrono::milliseconds overload_backlog{1'000};
  std::chrono::milliseconds memory_trim_interval{10'000};  // free heap pages go back to the system this often; 0: never
  std::chrono::milliseconds http_request_timeout{15'000};
  std::chrono::milliseconds http_idle_timeout{60'000};
  std::chrono::milliseconds shutdown_timeout{15'000};
  // speech to text
  std::string stt_provider;  // "gladia" | "local" | "" (none)
  // from_env() sets both from the machine (2 x cores, cores); these are the values of a 2-core machine
  std::size_t local_stt_max_streams = 4;
  std::size_t local_stt_threads = 2;  // decoders running at once, one language model each
  struct gladia_settings {
    std::string api_url = "https://api.gladia.io";
    std::string api_key;
    std::string region;  // "" | us-west | eu-west
    std::string model = "solaria-1";
    std::vector<std::string> languages;  // empty = automatic detection
    double endpointing = 0.3;
    double max_duration_without_endpointing = 15;
    std::string ca_file;  // extra CA for the upstream's TLS
  } gladia;
  // LiveKit room transcription: configured when all four of url, api_key, api_secret and public_base_url are set
  struct livekit_settings {
    std::string url;  // http(s) base of the LiveKit server
    std::string api_key;
    std::string api_secret;
    std::string public_base_url;        // ws(s) base LiveKit dials for /egress/audio
    std::string egress_mode = "track";  // track | room
    std::chrono::milliseconds reconcile_interval{30'000};
    std::chrono::milliseconds timeout{10'000};  // each Twirp call
    std::string ca_file;                        // extra CA for https
    bool configured() const { return !url.empty(); }
  } livekit;
  std::size_t stt_replay_buffer_bytes = 1'920'000;  // 60 s of audio kept until acknowledged
  std::chrono::milliseconds stt_drain_timeout{10'000};
  std::chrono::milliseconds stt_ack_timeout{10'000};  // audio outstanding, nothing acknowledged: reconnect
  std::chrono::milliseconds stt_chunk_flush{100};     // a partial upstream chunk waits this (to 1.25x) for more audio
  // persistence
  bool persistence = true;   // DATABASE_URL=none turns it off
  std::string database_url;  // "" = SQLite file at sqlite_path
  std::string sqlite_path = "./data/sessions.db";
  std::string persist_journal_dir = "./data/journal";
  std::size_t persist_journal_segment_bytes = 4 * 1024 * 1024;  // journal segments rotate past this size
  std::chrono::milliseconds persist_flush{300};
  std::size_t persist_batch = 100;
  std::size_t persist_max_pending = 100'000;
  std::size_t persist_max_parked = 10'000;  // rows set aside (unknown room, refused); beyond it the oldest is given up
  double cost_per_minute = 0.01;
  // logging
  std::string log_level = "info";
  bool dev = false;
};

struct config_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One documented setting (for --help and the README).
struct setting_doc {
  const char* name;
  const char* default_value;
  const char* meaning;
};
const std::vector<setting_doc>& settings();

// Reads the settings from a lookup (getenv in production, a map in tests). Throws config_error with a
// message naming the variable for any bad value, and when no secret is set unless dev is true.
config load_config(const std::function<const char*(const char*)>& lookup, bool dev);

// The --help text.
std::string usage_text();

}  // namespace sw
