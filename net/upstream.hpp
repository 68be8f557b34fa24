// Outbound connections for upstream providers: one-shot HTTP(S) requests and WebSocket (ws/wss) clients,
// asynchronous on the I/O runtime's threads. TLS verifies the certificate chain and the host name and
// sends SNI. Callbacks run on an I/O thread: hand their results to an actor, never block in them.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "net/client.hpp"
#include "proto/http.hpp"

namespace sw::net {

struct http_outcome {
  bool ok = false;    // a response arrived (any status)
  std::string error;  // network/TLS/timeout failure when !ok
  unsigned status = 0;
  header_list headers;
  std::string body;
};

struct ws_events {
  std::function<void()> opened;
  std::function<void(std::string)> text;
  // Once per connection: the peer's close code (1005 if none), or 1006 with a reason for network errors,
  // failed connects and timeouts.
  std::function<void(std::uint16_t, std::string)> closed;
  // After notify_when_drained(): everything handed over has been written.
  std::function<void()> drained;
};

class outbound_ws {
public:
  virtual ~outbound_ws() = default;
  // Queued, strictly one write at a time (what waits goes together in the next), written from the caller's buffer
  // (kept alive until written).
  virtual void send_binary(std::shared_ptr<const std::string> bytes) = 0;
  virtual void send_text(std::string text) = 0;
  // Bytes handed to send_* and not yet written: a caller bounds what it hands over by it.
  virtual std::size_t backlog() const = 0;
  // Fires `drained` once, as soon as everything handed over so far has been written (at once if it has).
  virtual void notify_when_drained() = 0;
  // Looks once whether the peer ended the stream unseen: a TCP end that came with its last bytes wakes no read
  // (edge_socket.hpp). If it did, `closed` reports it (1006) as if the read had seen it. For an owner that waits for
  // an answer that does not come.
  virtual void probe_end() = 0;
  virtual void close(std::uint16_t code) = 0;  // close handshake, bounded by the timeout
  virtual void abort() = 0;                    // drop the TCP connection; `closed` reports 1006
};

class io_runtime;

class outbound {
public:
  // Runs on `io` (the server's I/O threads); without one, on a thread of its own.
  explicit outbound(std::shared_ptr<io_runtime> io = nullptr);
  ~outbound();
  outbound(const outbound&) = delete;
  outbound& operator=(const outbound&) = delete;

  void fetch(const std::string& url, const std::string& method, header_list headers, std::string body,
             const client_options& opts, std::function<void(http_outcome)> done);
  // WebSocket pings after `opts.ping_interval` of silence from the peer, and the connection closes after another
  // one; a write that takes longer than `opts.timeout` closes it too (1006 to `closed`).
  std::shared_ptr<outbound_ws> connect_ws(const std::string& url, const client_options& opts, ws_events events);
  // Makes (once) the TLS context for this CA setting (empty: the system store); the error, or empty. Every
  // connection with the same setting shares it.
  std::string prepare_tls(const std::string& ca_file);
  std::size_t tls_contexts() const;  // contexts made so far

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace sw::net
