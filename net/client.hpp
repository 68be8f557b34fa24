// Blocking HTTP and WebSocket clients over Beast (plain or TLS with verification and SNI), for tests,
// benchmarks and command-line tools. Every call is bounded by a timeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "proto/http.hpp"

namespace sw::net {

struct client_options {
  std::string ca_file;                         // extra CA for https/wss (empty = system store)
  std::chrono::milliseconds timeout{5000};     // connect, handshake, each write
  int receive_buffer = 0;                      // SO_RCVBUF before connecting (0 = default)
  std::chrono::milliseconds ping_interval{0};  // outbound WebSockets: ping after this much silence (0 = never)
};

struct http_result {
  unsigned status = 0;
  header_list headers;  // names lower-cased
  std::string body;
  const std::string* header(const std::string& lower_name) const;
};

// An upgrade answered with something other than 101: the complete HTTP response.
struct upgrade_rejected : std::runtime_error {
  upgrade_rejected(unsigned s, std::string b, header_list h)
      : std::runtime_error("upgrade rejected with HTTP " + std::to_string(s)),
        status(s),
        body(std::move(b)),
        headers(std::move(h)) {}
  unsigned status;
  std::string body;
  header_list headers;
};

// One request on a fresh connection. Throws std::runtime_error on network/TLS errors and timeouts.
http_result http_fetch(const std::string& url, const std::string& method = "GET", const std::string& body = {},
                       const header_list& headers = {}, const client_options& opts = {});

// Sends raw bytes to host:port and returns everything read until the peer closes (or the timeout).
std::string raw_exchange(const std::string& host, std::uint16_t port, const std::string& bytes,
                         std::chrono::milliseconds timeout);

class ws_client {
public:
  struct message {
    enum kind_t { text, binary, closed, timeout } kind = timeout;
    std::string data;
    std::uint16_t close_code = 0;  // for closed: the peer's code (1005 if none, 1006 if the TCP dropped)
    std::string close_reason;
  };

  // Connects and completes the handshake. Throws upgrade_rejected for a non-101 answer,
  // std::runtime_error for anything else.
  static std::unique_ptr<ws_client> connect(const std::string& url, const client_options& opts = {});
  ~ws_client();

  void send_text(const std::string& text);
  void send_binary(const void* data, std::size_t size);
  // One message in frames of `piece` bytes (the first one, then continuation frames).
  void send_fragmented(bool text, const std::string& data, std::size_t piece);
  // Next message, answering pings meanwhile; kind == timeout when nothing came in time (the read stays
  // pending and the next call continues it).
  message read(std::chrono::milliseconds timeout);
  // Reads until a text message containing `needle` arrives; throws on timeout or close.
  std::string read_until(const std::string& needle, std::chrono::milliseconds timeout);
  // Sends a close frame and waits (bounded) for the peer's; returns the peer's code (0: none came in time).
  std::uint16_t close(std::uint16_t code = 1000);
  bool is_open() const;

private:
  ws_client();
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace sw::net
