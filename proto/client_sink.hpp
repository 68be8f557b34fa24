// The write side of one client connection, as actors see it. Implemented by net/; every method is
// thread-safe and returns at once (the work is posted to the connection's strand).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "proto/http.hpp"

namespace sw {

// How an outgoing message may be treated when the client reads too slowly.
enum class delivery : std::uint8_t {
  skippable,  // partial transcripts: skipped while the queue is above half full
  required,   // everything else: queued, or the client is closed 4409 when the queue is full
};

using shared_text = std::shared_ptr<const std::string>;

class client_sink {
public:
  virtual ~client_sink() = default;
  // Queues one JSON text frame (strictly one write at a time on the socket).
  virtual void send(shared_text json, delivery how) = 0;
  // Sends everything queued so far, then the close frame.
  virtual void close(std::uint16_t code, std::string reason) = 0;
};

using client_sink_ptr = std::shared_ptr<client_sink>;

// Answers one plain HTTP request (net/ writes the response).
class http_responder {
public:
  virtual ~http_responder() = default;
  virtual void respond(http_response res) = 0;
};

using http_responder_ptr = std::shared_ptr<http_responder>;

}  // namespace sw
