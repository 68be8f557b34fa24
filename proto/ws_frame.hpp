// RFC 6455 framing for the client end of a WebSocket (our upstream connections): the frames a client writes
// (final, masked) and a reader of the frames a server sends (unmasked), strict about the protocol. Bytes in, events
// out; no I/O (net/client_websocket.hpp does that).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace sw::ws {

enum class opcode : std::uint8_t { continuation = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA };

inline constexpr std::size_t max_control_payload = 125;

// Header bytes of a masked frame with `n` payload bytes (2 to 14, the masking key included).
constexpr std::size_t client_header_size(std::size_t n) {
  return 2 + (n < 126 ? 0 : n <= 0xFFFF ? 2 : 8) + 4;
}

// Writes one final frame as a client must send it: the header, then the payload masked with `key` (RFC 6455 §5.3).
// `out` has room for client_header_size(n) + n bytes; returns how many were written. `payload` may not overlap it.
std::size_t write_client_frame(std::uint8_t* out, opcode op, const void* payload, std::size_t n, std::uint32_t key);

// The payload of a close frame: the code (network order) and the reason (cut to fit a control frame).
std::string close_payload(std::uint16_t code, std::string_view reason);

// Reads what a server sends, frame by frame, from bytes given in pieces of any size. Control frames come whole
// (never fragmented, at most 125 bytes); data messages may come in fragments and are put together, up to a maximum
// size. A violation ends the reading with the close code RFC 6455 gives it: 1002 (a masked frame, reserved bits, an
// unknown opcode, a continuation out of place, a length not in its shortest form, a bad close frame), 1007 (a text
// message or close reason that is not UTF-8), 1009 (a message over the maximum).
class server_frame_reader {
public:
  enum class kind : std::uint8_t { more, text, binary, ping, pong, close, error };
  struct event {
    kind what = kind::more;  // more: every byte given was taken, and nothing is complete yet
    std::string data;        // the message; a ping's or pong's payload; a close frame's reason; what was wrong
    std::uint16_t code = 0;  // close: the server's code (1005 when it gave none); error: the code to close with
  };

  explicit server_frame_reader(std::size_t max_message) : max_message_(max_message) {}

  // Takes bytes from the front of `in` until an event is complete (or `in` is empty), and returns it. After an error
  // (and after a close frame) it takes nothing more and returns the same event again.
  event next(std::string_view& in);

private:
  event fail(std::uint16_t code, const char* what);
  event frame_done();

  std::size_t max_message_;
  std::uint8_t head_[14] = {};
  std::size_t have_ = 0;      // header bytes so far
  std::uint64_t remain_ = 0;  // payload bytes of the current frame still to come
  bool in_payload_ = false;   // the current frame's header is complete
  bool fin_ = false;          // of the current frame
  opcode op_ = opcode::continuation;
  bool in_message_ = false;    // a data message has begun and not ended
  bool message_text_ = false;  // ... and it is text
  std::string message_;        // the data message so far
  std::string control_;        // the control frame's payload so far
  bool ended_ = false;
  event end_;  // the close or error that ended the reading
};

}  // namespace sw::ws
