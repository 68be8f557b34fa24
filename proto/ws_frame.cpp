#include "proto/ws_frame.hpp"

#include <algorithm>
#include <cstring>

#include "proto/json.hpp"

namespace sw::ws {

std::size_t write_client_frame(std::uint8_t* out, opcode op, const void* payload, std::size_t n, std::uint32_t key) {
  std::size_t h = 0;
  out[h++] = static_cast<std::uint8_t>(0x80 | static_cast<std::uint8_t>(op));
  if (n < 126) {
    out[h++] = static_cast<std::uint8_t>(0x80 | n);
  } else if (n <= 0xFFFF) {
    out[h++] = 0x80 | 126;
    out[h++] = static_cast<std::uint8_t>(n >> 8);
    out[h++] = static_cast<std::uint8_t>(n);
  } else {
    out[h++] = 0x80 | 127;
    for (int shift = 56; shift >= 0; shift -= 8) out[h++] = static_cast<std::uint8_t>(std::uint64_t(n) >> shift);
  }
  std::uint8_t k[4];
  std::memcpy(k, &key, 4);
  std::memcpy(out + h, k, 4);
  h += 4;
  // Eight bytes at a time: the key repeats every four, so the same eight-byte pattern masks every eight.
  const auto* in = static_cast<const std::uint8_t*>(payload);
  std::uint8_t* dst = out + h;
  std::uint64_t k8;
  std::uint8_t pattern[8] = {k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]};
  std::memcpy(&k8, pattern, 8);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t v;
    std::memcpy(&v, in + i, 8);
    v ^= k8;
    std::memcpy(dst + i, &v, 8);
  }
  for (; i < n; ++i) dst[i] = in[i] ^ k[i % 4];
  return h + n;
}

std::string close_payload(std::uint16_t code, std::string_view reason) {
  std::string p;
  p += static_cast<char>(code >> 8);
  p += static_cast<char>(code & 0xFF);
  p.append(reason.substr(0, max_control_payload - 2));
  return p;
}

namespace {

// Close codes a peer may send (RFC 6455 §7.4.1 and the IANA registry; 1004-1006 and 1015 are never sent).
bool valid_close_code(std::uint16_t c) {
  return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1014) || (c >= 3000 && c <= 4999);
}

}  // namespace

server_frame_reader::event server_frame_reader::fail(std::uint16_t code, const char* what) {
  ended_ = true;
  end_ = event{kind::error, what, code};
  message_ = std::string();
  control_ = std::string();
  return end_;
}

server_frame_reader::event server_frame_reader::next(std::string_view& in) {
  if (ended_) return end_;
  for (;;) {
    if (!in_payload_) {
      // The header: 2 bytes, then the extended length; a server's frames carry no masking key.
      while (have_ < 2 && !in.empty()) {
        head_[have_++] = static_cast<std::uint8_t>(in.front());
        in.remove_prefix(1);
      }
      if (have_ < 2) return {};
      if (head_[1] & 0x80) return fail(1002, "a masked frame from the server");
      const unsigned len7 = head_[1] & 0x7F;
      const std::size_t need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
      while (have_ < need && !in.empty()) {
        head_[have_++] = static_cast<std::uint8_t>(in.front());
        in.remove_prefix(1);
      }
      if (have_ < need) return {};
      have_ = 0;
      std::uint64_t len = len7;
      if (len7 >= 126) {
        len = 0;
        for (std::size_t i = 2; i < need; ++i) len = (len << 8) | head_[i];
        if (len7 == 126 && len < 126) return fail(1002, "a frame length not in its shortest form");
        if (len7 == 127 && (len <= 0xFFFF || (len >> 63))) return fail(1002, "a frame length not in its shortest form");
      }
      if (head_[0] & 0x70) return fail(1002, "reserved bits set (no extension was agreed)");
      fin_ = head_[0] & 0x80;
      const unsigned op = head_[0] & 0x0F;
      if (op & 0x8) {
        if (op != 0x8 && op != 0x9 && op != 0xA) return fail(1002, "an unknown control opcode");
        if (!fin_) return fail(1002, "a fragmented control frame");
        if (len > max_control_payload) return fail(1002, "a control frame longer than 125 bytes");
        control_.clear();
      } else {
        if (op > 0x2) return fail(1002, "an unknown data opcode");
        if (op == 0x0 && !in_message_) return fail(1002, "a continuation frame with no message to continue");
        if (op != 0x0 && in_message_) return fail(1002, "a new message before the last one ended");
        if (op != 0x0) {
          in_message_ = true;
          message_text_ = op == 0x1;
        }
        if (len > max_message_ - message_.size()) return fail(1009, "a message larger than the maximum");
      }
      op_ = static_cast<opcode>(op);
      remain_ = len;
      in_payload_ = true;
    }
    const auto take = static_cast<std::size_t>(std::min<std::uint64_t>(remain_, in.size()));
    (static_cast<std::uint8_t>(op_) & 0x8 ? control_ : message_).append(in.data(), take);
    in.remove_prefix(take);
    remain_ -= take;
    if (remain_ > 0) return {};
    in_payload_ = false;
    auto e = frame_done();
    if (e.what != kind::more) return e;
  }
}

server_frame_reader::event server_frame_reader::frame_done() {
  switch (op_) {
    case opcode::ping:
      return {kind::ping, control_, 0};
    case opcode::pong:
      return {kind::pong, control_, 0};
    case opcode::close: {
      if (control_.size() == 1) return fail(1002, "a close frame with a one-byte payload");
      std::uint16_t code = 1005;
      std::string reason;
      if (control_.size() >= 2) {
        code = static_cast<std::uint16_t>((static_cast<std::uint8_t>(control_[0]) << 8) |
                                          static_cast<std::uint8_t>(control_[1]));
        if (!valid_close_code(code)) return fail(1002, "a close frame with an invalid code");
        reason = control_.substr(2);
        if (!is_utf8(reason)) return fail(1007, "a close reason that is not UTF-8");
      }
      ended_ = true;
      end_ = event{kind::close, std::move(reason), code};
      control_ = std::string();
      message_ = std::string();
      return end_;
    }
    default:
      break;
  }
  if (!fin_) return {};  // more fragments of the message follow
  in_message_ = false;
  event e{message_text_ ? kind::text : kind::binary, std::move(message_), 0};
  message_ = std::string();
  if (e.what == kind::text && !is_utf8(e.data)) return fail(1007, "a text message that is not UTF-8");
  return e;
}

}  // namespace sw::ws
