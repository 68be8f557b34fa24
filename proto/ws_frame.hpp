// RFC 6455 framing for both ends of a WebSocket, strict about the protocol. The client end (our upstream
// connections): the frames a client writes (final, masked) and a reader of the frames a server sends (unmasked). The
// server end (our clients' connections): the headers of the frames a server writes and a reader, in place, of the
// frames a client sends (masked). Bytes in, events out; no I/O (net/client_websocket.hpp and
// net/server_websocket.hpp do that).
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

// Header bytes of a server's (unmasked) frame with `n` payload bytes: 2 to 10.
constexpr std::size_t server_header_size(std::size_t n) {
  return 2 + (n < 126 ? 0 : n <= 0xFFFF ? 2 : 8);
}

// Writes the header of one final, unmasked frame as a server sends it; `out` has room for server_header_size(n)
// bytes. Returns how many were written.
std::size_t write_server_header(std::uint8_t* out, opcode op, std::size_t n);

// Copies `n` bytes from `src` to `dst` XORed with the masking key, starting `phase` bytes into it (RFC 6455 §5.3):
// masks and unmasks alike. `dst` may be another buffer, or `src` or before it in the same one (in place, moving
// down), never after it there.
void mask_copy(std::uint8_t* dst, const std::uint8_t* src, std::size_t n, const std::uint8_t key[4], std::size_t phase);

// The Sec-WebSocket-Accept that answers a Sec-WebSocket-Key (RFC 6455 §4.2.2).
std::string accept_key(std::string_view key);

// Reads what a server sends, frame by frame, from bytes given in pieces of any size. Control frames come whole
// (never fragmented, at most 125 bytes); data messages may come in fragments and are put together, up to a maximum
// size. A violation ends the reading with the close code RFC 6455 gives it: 1002 (a masked frame, reserved bits, an
// unknown opcode, a continuation out of place, a 64-bit length with its top bit set, a control frame's length not in
// 7 bits, a bad close frame), 1007 (a text
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

// Reads what a client sends, in place, from bytes given in pieces of any size: the frames must be masked, and the
// same rules as server_frame_reader's apply otherwise (and end the reading with the same close codes). The payload of
// each data frame is unmasked and moved down in the caller's buffer to `out`, so a message lies whole and contiguous
// just before `out` when it completes, whatever fragments it came in; headers and control frames are cut out (a
// control frame's payload goes to the event). The caller may move its buffer's bytes between calls, as long as
// [out - message_bytes(), out) and [from, to) keep their contents.
class client_frame_reader {
public:
  enum class kind : std::uint8_t { more, text, binary, ping, pong, close, error };
  struct event {
    kind what = kind::more;   // more: every byte given was taken, and nothing is complete yet
    std::string data;         // a text message; a ping's or pong's payload; a close frame's reason; what was wrong
    std::uint16_t code = 0;   // close: the client's code (1005 when it gave none); error: the code to close with
    std::size_t size = 0;     // text, binary: the message's payload bytes, which end at `out`
    const char* reason = "";  // error: the reason to close with ("Protocol error", "Invalid close code", ...)
  };

  explicit client_frame_reader(std::size_t max_message) : max_message_(max_message) {}

  // Takes bytes [from, to) of `buf` until an event is complete (or none are left), advancing `from`; data payload is
  // unmasked into [out, ...), advancing `out` (never past `from`). After an error (and after a close frame) it takes
  // nothing more and returns the same event again.
  event next(std::uint8_t* buf, std::size_t& from, std::size_t to, std::size_t& out);

  bool ended() const { return ended_; }
  // Payload bytes of the data message in progress, so far (they end at `out`).
  std::size_t message_bytes() const { return message_bytes_; }

private:
  event fail(std::uint16_t code, std::string what, const char* reason = nullptr);
  event frame_done(const std::uint8_t* buf, std::size_t out);

  std::size_t max_message_;
  std::uint8_t head_[14] = {};
  std::size_t have_ = 0;      // header bytes so far
  std::uint64_t remain_ = 0;  // payload bytes of the current frame still to come
  std::uint8_t key_[4] = {};  // the current frame's masking key
  std::size_t phase_ = 0;     // payload bytes of the current frame so far, modulo 4 (where the key stands)
  bool in_payload_ = false;   // the current frame's header is complete
  bool fin_ = false;          // of the current frame
  opcode op_ = opcode::continuation;
  bool in_message_ = false;    // a data message has begun and not ended
  bool message_text_ = false;  // ... and it is text
  std::size_t message_bytes_ = 0;
  std::string control_;  // the control frame's payload so far
  bool ended_ = false;
  event end_;  // the close or error that ended the reading
};

}  // namespace sw::ws
