// The figures net/ keeps about its sockets (atomics, written on the I/O threads), and where it tells of what it
// counts. Read by the gateway actor for /metrics.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

namespace sw::net {

// Figures net/ keeps; read by the gateway actor for /metrics.
struct net_stats {
  std::atomic<std::int64_t> connections{0};  // open TCP connections
  std::atomic<std::int64_t> websockets{0};   // open WebSockets
  std::atomic<std::uint64_t> http_requests{0};
  std::atomic<std::uint64_t> frames_in{0};
  std::atomic<std::uint64_t> frames_out{0};
  std::atomic<std::uint64_t> socket_reads{0};         // reads of WebSocket client sockets that returned bytes
  std::atomic<std::uint64_t> held_audio_releases{0};  // chunks held in the kernel, released by the pause watch
  std::atomic<std::uint64_t> ends_found_at_pause{0};  // clients' TCP ends that came with their last bytes (server.cpp)
  std::atomic<std::uint64_t> partials_skipped{0};
  std::atomic<std::uint64_t> slow_client_closes{0};
  std::atomic<std::uint64_t> heartbeat_timeouts{0};
  std::atomic<std::uint64_t> protocol_errors{0};  // clients closed 1002/1007/1009 for breaking RFC 6455
  std::atomic<std::uint64_t> frame_floods{0};     // clients closed 1008 for more WebSocket frames than the budget
  std::atomic<std::uint64_t> tls_handshake_failures{0};
  std::atomic<std::uint64_t> tls_reloads{0};          // certificate and key loaded again (server::reload_tls)
  std::atomic<std::uint64_t> tls_reload_failures{0};  // ... refused: the files did not load, the old pair serves on
  std::atomic<std::uint64_t> bad_requests{0};
  std::atomic<std::uint64_t> bodies_too_large{0};
  std::atomic<std::uint64_t> accept_errors{0};     // e.g. out of file descriptors: accepting pauses 100 ms
  std::atomic<std::int64_t> read_buffer_bytes{0};  // what the open WebSockets' read buffers hold (gauge)
  // Where net/ tells of what it counts (kind = the counter's name; never a token, never audio); set before start.
  std::function<void(const std::string& kind, const std::string& line)> log;
};

}  // namespace sw::net
