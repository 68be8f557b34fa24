#include "proto/ws_frame.hpp"

#include <algorithm>
#include <cstring>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "proto/json.hpp"

namespace sw::ws {

void mask_copy(std::uint8_t* dst, const std::uint8_t* src, std::size_t n, const std::uint8_t key[4],
               std::size_t phase) {
  std::uint8_t k[4];
  for (std::size_t i = 0; i < 4; ++i) k[i] = key[(phase + i) % 4];
  // Eight bytes at a time: the key repeats every four, so the same eight-byte pattern masks every eight. Each word is
  // loaded before it is stored, and a store never reaches a byte not yet loaded (dst <= src).
  std::uint64_t k8;
  const std::uint8_t pattern[8] = {k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]};
  std::memcpy(&k8, pattern, 8);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t v;
    std::memcpy(&v, src + i, 8);
    v ^= k8;
    std::memcpy(dst + i, &v, 8);
  }
  for (; i < n; ++i) dst[i] = src[i] ^ k[i % 4];
}

namespace {

// The length field of a frame header (2 to 10 bytes), then the masking key when the mask bit is set.
std::size_t write_length(std::uint8_t* out, std::size_t n, std::uint8_t mask_bit) {
  std::size_t h = 0;
  if (n < 126) {
    out[h++] = static_cast<std::uint8_t>(mask_bit | n);
  } else if (n <= 0xFFFF) {
    out[h++] = mask_bit | 126;
    out[h++] = static_cast<std::uint8_t>(n >> 8);
    out[h++] = static_cast<std::uint8_t>(n);
  } else {
    out[h++] = mask_bit | 127;
    for (int shift = 56; shift >= 0; shift -= 8) out[h++] = static_cast<std::uint8_t>(std::uint64_t(n) >> shift);
  }
  return h;
}

}  // namespace

std::size_t write_client_frame(std::uint8_t* out, opcode op, const void* payload, std::size_t n, std::uint32_t key) {
  out[0] = static_cast<std::uint8_t>(0x80 | static_cast<std::uint8_t>(op));
  std::size_t h = 1 + write_length(out + 1, n, 0x80);
  std::uint8_t k[4];
  std::memcpy(k, &key, 4);
  std::memcpy(out + h, k, 4);
  h += 4;
  mask_copy(out + h, static_cast<const std::uint8_t*>(payload), n, k, 0);
  return h + n;
}

std::size_t write_server_header(std::uint8_t* out, opcode op, std::size_t n) {
  out[0] = static_cast<std::uint8_t>(0x80 | static_cast<std::uint8_t>(op));
  return 1 + write_length(out + 1, n, 0);
}

std::string accept_key(std::string_view key) {
  std::string s(key);
  s += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(s.data()), s.size(), digest);
  std::string out(4 * ((sizeof digest + 2) / 3), '\0');
  EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), digest, static_cast<int>(sizeof digest));
  return out;
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

struct verdict {
  std::uint16_t code = 0;  // 0: lawful
  std::string what;
  const char* reason = nullptr;  // the close reason, when not the code's own (close_reason_for)
};

// The reason a close with a violation's code gives.
const char* close_reason_for(std::uint16_t code) {
  return code == 1009 ? "Message too big" : code == 1007 ? "Invalid UTF-8" : "Protocol error";
}

// Bytes of a header (its masking key not included) once its first two are known.
std::size_t length_bytes(const std::uint8_t* h) {
  const unsigned len7 = h[1] & 0x7F;
  return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
}

// What RFC 6455 §5 says of a whole header (before its masking key), given whether a data message is in progress;
// `len` is its payload length. A data frame's length in a longer form than it needs (a 5-byte message with a 16-bit
// length) is taken: §5.2 asks senders for the shortest form but says nothing of receivers, and Node's `ws`, which the
// old service ran, takes it, so clients that always write a 16- or 64-bit length worked with it. A control frame's
// length must fit in its 7 bits, as `ws` requires.
verdict check_header(const std::uint8_t* h, bool in_message, std::uint64_t& len) {
  const unsigned len7 = h[1] & 0x7F;
  len = len7;
  if (len7 >= 126) {
    len = 0;
    for (std::size_t i = 2; i < length_bytes(h); ++i) len = (len << 8) | h[i];
    if (len >> 63) return {1002, "a 64-bit frame length with its most significant bit set"};
  }
  if (h[0] & 0x70) return {1002, "reserved bits set (no extension was agreed)"};
  const bool fin = h[0] & 0x80;
  const unsigned op = h[0] & 0x0F;
  if (op & 0x8) {
    if (op != 0x8 && op != 0x9 && op != 0xA) return {1002, "an unknown control opcode"};
    if (!fin) return {1002, "a fragmented control frame"};
    if (len7 > max_control_payload) return {1002, "a control frame longer than 125 bytes, or its length not in 7 bits"};
  } else {
    if (op > 0x2) return {1002, "an unknown data opcode"};
    if (op == 0x0 && !in_message) return {1002, "a continuation frame with no message to continue"};
    if (op != 0x0 && in_message) return {1002, "a new message before the last one ended"};
  }
  return {};
}

// A close frame's payload: its code (1005 when it has none) and reason, or what is wrong with it.
verdict read_close(const std::string& p, std::uint16_t& code, std::string& reason) {
  if (p.size() == 1) return {1002, "a close frame with a one-byte payload"};
  code = 1005;
  if (p.size() >= 2) {
    code = static_cast<std::uint16_t>((static_cast<std::uint8_t>(p[0]) << 8) | static_cast<std::uint8_t>(p[1]));
    if (!valid_close_code(code))
      return {1002, "a close frame with an invalid code (" + std::to_string(code) + ")", "Invalid close code"};
    reason = p.substr(2);
    if (!is_utf8(reason)) return {1007, "a close reason that is not UTF-8"};
  }
  return {};
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
      const std::size_t need = length_bytes(head_);
      while (have_ < need && !in.empty()) {
        head_[have_++] = static_cast<std::uint8_t>(in.front());
        in.remove_prefix(1);
      }
      if (have_ < need) return {};
      have_ = 0;
      std::uint64_t len = 0;
      const auto v = check_header(head_, in_message_, len);
      if (v.code) return fail(v.code, v.what.c_str());
      fin_ = head_[0] & 0x80;
      const unsigned op = head_[0] & 0x0F;
      if (op & 0x8) {
        control_.clear();
      } else {
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
      std::uint16_t code = 0;
      std::string reason;
      const auto v = read_close(control_, code, reason);
      if (v.code) return fail(v.code, v.what.c_str());
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

client_frame_reader::event client_frame_reader::fail(std::uint16_t code, std::string what, const char* reason) {
  ended_ = true;
  end_ = event{kind::error, std::move(what), code, 0, reason ? reason : close_reason_for(code)};
  control_ = std::string();
  return end_;
}

client_frame_reader::event client_frame_reader::next(std::uint8_t* buf, std::size_t& from, std::size_t to,
                                                     std::size_t& out) {
  if (ended_) return end_;
  for (;;) {
    if (!in_payload_) {
      // The header: 2 bytes, the extended length, then the masking key every client frame carries.
      while (have_ < 2 && from < to) head_[have_++] = buf[from++];
      if (have_ < 2) return {};
      if (!(head_[1] & 0x80)) return fail(1002, "an unmasked frame from the client");
      const std::size_t need = length_bytes(head_) + 4;
      while (have_ < need && from < to) head_[have_++] = buf[from++];
      if (have_ < need) return {};
      have_ = 0;
      std::uint64_t len = 0;
      auto v = check_header(head_, in_message_, len);
      if (v.code) return fail(v.code, std::move(v.what));
      std::memcpy(key_, head_ + need - 4, 4);
      phase_ = 0;
      fin_ = head_[0] & 0x80;
      const unsigned op = head_[0] & 0x0F;
      if (op & 0x8) {
        control_.clear();
      } else {
        if (op != 0x0) {
          in_message_ = true;
          message_text_ = op == 0x1;
          message_bytes_ = 0;
        }
        if (len > max_message_ - message_bytes_) return fail(1009, "a message larger than the maximum");
      }
      op_ = static_cast<opcode>(op);
      remain_ = len;
      in_payload_ = true;
    }
    const auto take = static_cast<std::size_t>(std::min<std::uint64_t>(remain_, to - from));
    if (static_cast<std::uint8_t>(op_) & 0x8) {
      const auto at = control_.size();
      control_.resize(at + take);
      mask_copy(reinterpret_cast<std::uint8_t*>(control_.data()) + at, buf + from, take, key_, phase_);
    } else {
      mask_copy(buf + out, buf + from, take, key_, phase_);
      out += take;
      message_bytes_ += take;
    }
    from += take;
    phase_ = (phase_ + take) % 4;
    remain_ -= take;
    if (remain_ > 0) return {};
    in_payload_ = false;
    auto e = frame_done(buf, out);
    if (e.what != kind::more) return e;
  }
}

client_frame_reader::event client_frame_reader::frame_done(const std::uint8_t* buf, std::size_t out) {
  switch (op_) {
    case opcode::ping:
      return {kind::ping, control_, 0, 0};
    case opcode::pong:
      return {kind::pong, control_, 0, 0};
    case opcode::close: {
      std::uint16_t code = 0;
      std::string reason;
      auto v = read_close(control_, code, reason);
      if (v.code) return fail(v.code, std::move(v.what), v.reason);
      ended_ = true;
      end_ = event{kind::close, std::move(reason), code, 0};
      control_ = std::string();
      return end_;
    }
    default:
      break;
  }
  if (!fin_) return {};  // more fragments of the message follow
  in_message_ = false;
  event e{message_text_ ? kind::text : kind::binary, std::string(), 0, message_bytes_};
  message_bytes_ = 0;
  if (e.what == kind::text) {
    e.data.assign(reinterpret_cast<const char*>(buf) + out - e.size, e.size);
    if (!is_utf8(e.data)) return fail(1007, "a text message that is not UTF-8");
  }
  return e;
}

}  // namespace sw::ws
