// The one listening port: plain HTTP/1.1 + WebSocket, and TLS on the same port when configured.
// No business rules here: every request goes to the gateway actor, which answers through a responder.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "net/stats.hpp"
#include "proto/actors.hpp"

namespace sw::net {

struct server_options {
  std::string host = "0.0.0.0";
  std::uint16_t port = 3001;  // 0 = ephemeral (tests)
  int io_threads = 2;
  std::string tls_cert_file;  // both set = TLS detected per connection
  std::string tls_key_file;
  std::string cors_origin = "*";            // for the responses net/ writes itself (413, 400, 503)
  std::size_t body_limit = 64 * 1024;       // request bodies above -> 413
  std::size_t ws_max_message = 256 * 1024;  // larger frames close the socket 1009
  // > 0: the WebSocket frames a client may send a second, of any kind (data, continuation, control), and 4 s of it at
  // once; past it the client is closed 1008 and, until the close completes, read no faster than this.
  double ws_max_frames_per_second = 0;
  std::size_t send_queue_bytes = 1024 * 1024;         // per WebSocket client
  int socket_send_buffer = 0;                         // SO_SNDBUF of accepted sockets (0 = kernel default)
  std::chrono::milliseconds request_timeout{15'000};  // first request (and TLS handshake) must arrive within
  std::chrono::milliseconds idle_timeout{60'000};     // keep-alive connection idle between requests
  std::chrono::milliseconds ping_interval{15'000};
  std::chrono::milliseconds pong_timeout{45'000};
  std::chrono::milliseconds close_timeout{5'000};  // a close handshake that takes longer drops the TCP connection
  // > 0: once a second while audio comes, a WebSocket looks at what the kernel holds unread for it; this many bytes or
  // more at five checks in a row, and its session hears (behind_atom) at each further one. 0: never looked at.
  std::size_t backlog_floor_bytes = 0;
  // > 0: a WebSocket whose binary frames pause for this long tells its session once (quiet_atom), so that audio
  // waiting in a partial upstream chunk can go. One timer for the whole server looks at every open WebSocket's
  // last frame each quarter interval (a pause is reported 1 to 1.25 intervals after the last frame).
  std::chrono::milliseconds audio_quiet{0};
  // > 0: a participant stream's binary frames go to its session in batches, one whenever the stream's running
  // total crosses a multiple of this many bytes (the STT provider's upstream chunk), and before anything else the
  // session hears (a text frame, a pause, the end). 0 (and for /egress/audio): each frame as it comes.
  std::size_t audio_batch_bytes = 0;
  // Addresses or CIDR networks (checked by config/) of the proxies in front: a request from one of them is logged
  // with the client address its X-Forwarded-For ends with ("203.0.113.7 via 10.0.0.2:51234"); from anyone else,
  // X-Forwarded-For is ignored.
  std::vector<std::string> trusted_proxies;
};

class io_runtime;

class server {
public:
  // Runs on `io` (shared with other users of the I/O threads); without one, on its own with opts.io_threads.
  server(server_options opts, gateway_actor handler, std::shared_ptr<net_stats> stats,
         std::shared_ptr<io_runtime> io = nullptr);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Binds and listens. Throws std::runtime_error (port in use, bad TLS files).
  void start();
  // The bound port (useful with port 0).
  std::uint16_t port() const;
  bool tls() const;
  // Loads TLS_CERT_FILE and TLS_KEY_FILE again (a renewed certificate): connections from now on get the new pair, open
  // ones keep theirs. False when TLS is not configured. Throws std::runtime_error when the files do not load (or the
  // key does not match the certificate); the pair in use then serves on. Safe from any thread.
  bool reload_tls();
  // Stops accepting new connections; open ones keep running.
  void stop_accepting();
  // Stops accepting and waits up to `bound` for every connection to end; true if they all did. Connections
  // still open end when the I/O runtime stops.
  bool drain(std::chrono::milliseconds bound);

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace sw::net
