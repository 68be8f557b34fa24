// WebSocket framing (proto/ws_frame.hpp): the client end's frames and what it makes of a server's bytes; the server
// end's headers and what it makes of a client's bytes, in place; whole or in pieces, lawful or not.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "proto/ws_frame.hpp"

namespace {

using sw::ws::opcode;
using reader = sw::ws::server_frame_reader;
using kind = reader::kind;

// A server's frame: unmasked, `fin` and the opcode as given, the length in its shortest form unless `long_form`.
std::string server_frame(unsigned op, const std::string& payload, bool fin = true, bool long_form = false) {
  std::string f;
  f += static_cast<char>((fin ? 0x80 : 0) | op);
  const auto n = payload.size();
  if (n < 126 && !long_form) {
    f += static_cast<char>(n);
  } else if (n <= 0xFFFF) {
    f += static_cast<char>(126);
    f += static_cast<char>(n >> 8);
    f += static_cast<char>(n & 0xFF);
  } else {
    f += static_cast<char>(127);
    for (int shift = 56; shift >= 0; shift -= 8) f += static_cast<char>((std::uint64_t(n) >> shift) & 0xFF);
  }
  return f + payload;
}

std::vector<reader::event> read_all(reader& r, std::string_view in) {
  std::vector<reader::event> out;
  for (;;) {
    auto e = r.next(in);
    if (e.what == kind::more) break;
    out.push_back(e);
    if (e.what == kind::close || e.what == kind::error) break;
  }
  return out;
}

TEST(WsFrame, AClientFrameIsFinalMaskedAndUnmasksToThePayload) {
  std::mt19937 gen(7);
  for (std::size_t n : {0u, 1u, 7u, 8u, 125u, 126u, 3200u, 65535u, 65536u, 70000u}) {
    std::string payload(n, '\0');
    for (auto& c : payload) c = static_cast<char>(gen());
    const std::uint32_t key = gen();
    std::vector<std::uint8_t> out(sw::ws::client_header_size(n) + n);
    ASSERT_EQ(sw::ws::write_client_frame(out.data(), opcode::binary, payload.data(), n, key), out.size()) << n;
    EXPECT_EQ(out[0], 0x82) << n;  // FIN, binary
    EXPECT_TRUE(out[1] & 0x80) << n;
    std::size_t h = 2;
    std::uint64_t len = out[1] & 0x7F;
    if (len == 126) {
      len = (out[2] << 8) | out[3];
      h = 4;
      EXPECT_GE(len, 126u);
    } else if (len == 127) {
      len = 0;
      for (int i = 2; i < 10; ++i) len = (len << 8) | out[i];
      h = 10;
      EXPECT_GT(len, 0xFFFFu);
    }
    ASSERT_EQ(len, n);
    const std::uint8_t* k = out.data() + h;
    EXPECT_EQ(0, std::memcmp(k, &key, 4));
    h += 4;
    ASSERT_EQ(h, sw::ws::client_header_size(n));
    for (std::size_t i = 0; i < n; ++i)
      ASSERT_EQ(static_cast<char>(out[h + i] ^ k[i % 4]), payload[i]) << "byte " << i << " of " << n;
  }
}

TEST(WsFrame, MessagesAndControlFramesComeOutWholeHoweverTheBytesArrive) {
  std::string big(70000, 'x');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  const std::string stream = server_frame(0x1, R"({"type":"audio_chunk"})") + server_frame(0x9, "hi") +
                             server_frame(0x1, "frag", false) + server_frame(0xA, "pong") +
                             server_frame(0x0, "men", false) + server_frame(0x0, "", false) + server_frame(0x0, "ted") +
                             server_frame(0x2, std::string("\0\1\2", 3)) + server_frame(0x1, big) +
                             server_frame(0x1, "") + server_frame(0x1, "caf\xc3\xa9") +
                             server_frame(0x8, std::string("\x03\xe8"
                                                           "bye",
                                                           5));
  const std::vector<std::pair<kind, std::string>> want = {{kind::text, R"({"type":"audio_chunk"})"},
                                                          {kind::ping, "hi"},
                                                          {kind::pong, "pong"},
                                                          {kind::text, "fragmented"},
                                                          {kind::binary, std::string("\0\1\2", 3)},
                                                          {kind::text, big},
                                                          {kind::text, ""},
                                                          {kind::text, "caf\xc3\xa9"},
                                                          {kind::close, "bye"}};
  std::mt19937 gen(11);
  for (int round = 0; round < 300; ++round) {
    reader r(1 << 20);
    std::vector<reader::event> got;
    for (std::size_t at = 0; at < stream.size();) {
      const std::size_t piece = round == 0 ? stream.size() : round == 1 ? 1 : 1 + gen() % 300;
      std::string_view in(stream.data() + at, std::min(piece, stream.size() - at));
      at += in.size();
      for (;;) {
        auto e = r.next(in);
        if (e.what == kind::more) {
          ASSERT_TRUE(in.empty()) << "round " << round;
          break;
        }
        got.push_back(e);
        if (e.what == kind::close) break;
      }
    }
    ASSERT_EQ(got.size(), want.size()) << "round " << round;
    for (std::size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i].what, want[i].first) << "round " << round << ", event " << i;
      EXPECT_EQ(got[i].data, want[i].second) << "round " << round << ", event " << i;
    }
    EXPECT_EQ(got.back().code, 1000);
    std::string_view more("\x81\x01x", 3);  // after the close, nothing more is taken
    EXPECT_EQ(r.next(more).what, kind::close);
    EXPECT_EQ(more.size(), 3u);
  }
}

TEST(WsFrame, ACloseFrameWithoutACodeIs1005) {
  reader r(1024);
  auto e = read_all(r, server_frame(0x8, ""));
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].what, kind::close);
  EXPECT_EQ(e[0].code, 1005);
  EXPECT_EQ(e[0].data, "");
}

TEST(WsFrame, EveryViolationEndsTheReadingWithItsCloseCode) {
  struct violation {
    std::string bytes;
    std::uint16_t code;
    const char* what;
  };
  std::string masked = server_frame(0x1, "abcd");
  masked[1] = static_cast<char>(masked[1] | 0x80);
  masked.insert(2, "\1\2\3\4");
  std::string rsv = server_frame(0x1, "a");
  rsv[0] = static_cast<char>(rsv[0] | 0x40);
  const std::vector<violation> cases = {
      {masked, 1002, "masked"},
      {rsv, 1002, "reserved"},
      {server_frame(0x3, "a"), 1002, "unknown data"},
      {server_frame(0xB, "a"), 1002, "unknown control"},
      {server_frame(0x0, "a"), 1002, "continuation"},
      {server_frame(0x1, "a", false) + server_frame(0x1, "b"), 1002, "before the last one ended"},
      {server_frame(0x9, "a", false), 1002, "fragmented control"},
      {server_frame(0x9, std::string(126, 'a')), 1002, "longer than 125"},
      {server_frame(0x9, "x", true, true), 1002, "length not in 7 bits"},
      {std::string("\x81\x7f\x80\0\0\0\0\0\0\x01", 10), 1002, "most significant bit"},
      {server_frame(0x8, "\x03"), 1002, "one-byte"},
      {server_frame(0x8, std::string("\x03\xed", 2)), 1002, "invalid code"},  // 1005 may not be sent
      {server_frame(0x8, std::string("\x0b\xb7", 2)), 1002, "invalid code"},  // 2999
      {server_frame(0x8, std::string("\x03\xe8\xff", 3)), 1007, "close reason"},
      {server_frame(0x1, "caf\xc3"), 1007, "not UTF-8"},
      {server_frame(0x1, "\xed\xa0\x80"), 1007, "not UTF-8"},  // a surrogate
      {server_frame(0x1, std::string(1025, 'z')), 1009, "larger"},
      {server_frame(0x1, std::string(600, 'z'), false) + server_frame(0x0, std::string(600, 'z')), 1009, "larger"},
  };
  for (const auto& c : cases) {
    for (std::size_t piece : {std::size_t(1), std::size_t(5000)}) {
      reader r(1024);
      std::vector<reader::event> got;
      for (std::size_t at = 0; at < c.bytes.size() && (got.empty() || got.back().what == kind::text);) {
        std::string_view in(c.bytes.data() + at, std::min(piece, c.bytes.size() - at));
        at += in.size();
        for (auto e = r.next(in); e.what != kind::more; e = r.next(in)) {
          got.push_back(e);
          if (e.what == kind::error || e.what == kind::close) break;
        }
      }
      ASSERT_FALSE(got.empty()) << c.what;
      EXPECT_EQ(got.back().what, kind::error) << c.what;
      EXPECT_EQ(got.back().code, c.code) << c.what;
      EXPECT_NE(got.back().data.find(c.what), std::string::npos) << got.back().data;
      std::string_view after = "\x81\x01x";
      EXPECT_EQ(r.next(after).what, kind::error) << c.what << ": it stays ended";
    }
  }
}

TEST(WsFrame, ACloseFrameCarriesTheCodeAndAReasonThatFitsAControlFrame) {
  const auto p = sw::ws::close_payload(4001, std::string(200, 'r'));
  ASSERT_EQ(p.size(), 125u);
  EXPECT_EQ(static_cast<unsigned char>(p[0]), 4001 >> 8);
  EXPECT_EQ(static_cast<unsigned char>(p[1]), 4001 & 0xFF);
  reader r(1024);
  auto e = read_all(r, server_frame(0x8, p));
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].code, 4001);
  EXPECT_EQ(e[0].data, std::string(123, 'r'));
}

}  // namespace

// The server end's reader of a client's frames: masked, parsed in place.
namespace client_end {

using creader = sw::ws::client_frame_reader;
using ckind = creader::kind;

// A client's frame: masked with `key`, `fin` and the opcode as given, the length in its shortest form unless
// `long_form`.
std::string client_frame(unsigned op, const std::string& payload, bool fin = true, bool long_form = false,
                         std::uint32_t key = 0x5a17c3e1) {
  std::string f = server_frame(op, payload, fin, long_form);
  const std::size_t head = f.size() - payload.size();
  f[1] = static_cast<char>(f[1] | 0x80);
  char k[4];
  std::memcpy(k, &key, 4);
  f.insert(head, k, 4);
  for (std::size_t i = 0; i < payload.size(); ++i) f[head + 4 + i] = static_cast<char>(payload[i] ^ k[i % 4]);
  return f;
}

struct seen {
  ckind what;
  std::string data;  // a binary message's bytes too, as found before `out`
  std::uint16_t code;
  std::string reason;
};

// Feeds `in` to a reader in pieces of `piece` bytes, appended to one buffer the reader parses in place, as the
// server's connection does; collects the events up to the end of the reading.
std::vector<seen> feed(const std::string& in, std::size_t piece, std::size_t max_message = 1 << 20) {
  creader r(max_message);
  std::vector<std::uint8_t> buf(in.size());
  std::size_t from = 0, to = 0, out = 0;
  std::vector<seen> got;
  for (std::size_t at = 0; at < in.size() && !r.ended(); at += piece) {
    const auto k = std::min(piece, in.size() - at);
    std::memcpy(buf.data() + to, in.data() + at, k);
    to += k;
    for (auto e = r.next(buf.data(), from, to, out); e.what != ckind::more; e = r.next(buf.data(), from, to, out)) {
      EXPECT_LE(out, from);
      if (e.what == ckind::binary) {
        e.data.assign(reinterpret_cast<const char*>(buf.data()) + out - e.size, e.size);
      } else if (e.what == ckind::text) {
        EXPECT_EQ(e.data, std::string(reinterpret_cast<const char*>(buf.data()) + out - e.size, e.size));
      }
      got.push_back({e.what, e.data, e.code, e.reason});
      if (r.ended()) break;
    }
    if (!r.ended()) {
      EXPECT_EQ(from, to) << "`more` only once every byte given is taken";
    }
  }
  return got;
}

TEST(ClientFrameReader, AMessageInFragmentsWithControlFramesBetweenLiesWholeBeforeOut) {
  std::mt19937 gen(11);
  auto bytes = [&](std::size_t n) {
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(gen());
    return s;
  };
  const std::string a = bytes(700), b = bytes(70'000), c = bytes(3);
  const std::string text = "caf\xc3\xa9 au lait";
  const std::string in = client_frame(0x2, "", false) + client_frame(0x9, "p1") + client_frame(0x0, a, false) +
                         client_frame(0x0, b, false, false, 0x01020304) + client_frame(0xA, "") + client_frame(0x0, c) +
                         client_frame(0x2, "frame") + client_frame(0x1, text.substr(0, 4), false) +
                         client_frame(0x0, text.substr(4)) + client_frame(0x8, sw::ws::close_payload(4001, "done")) +
                         client_frame(0x1, "after");
  for (std::size_t piece : {std::size_t(1), std::size_t(3), std::size_t(641), in.size()}) {
    auto got = feed(in, piece);
    ASSERT_EQ(got.size(), 6u) << "piece " << piece;
    EXPECT_EQ(got[0].what, ckind::ping);
    EXPECT_EQ(got[0].data, "p1");
    EXPECT_EQ(got[1].what, ckind::pong);
    EXPECT_EQ(got[2].what, ckind::binary);
    EXPECT_TRUE(got[2].data == a + b + c) << "piece " << piece << ": the fragments, unmasked, in one piece";
    EXPECT_EQ(got[3].what, ckind::binary);
    EXPECT_EQ(got[3].data, "frame");
    EXPECT_EQ(got[4].what, ckind::text);
    EXPECT_EQ(got[4].data, text);
    EXPECT_EQ(got[5].what, ckind::close);
    EXPECT_EQ(got[5].code, 4001);
    EXPECT_EQ(got[5].data, "done");
  }
}

// A data frame's length in a longer form than it needs is read as its length: RFC 6455 §5.2 asks senders for the
// shortest form, and Node's `ws`, which the old service ran, takes the others, so clients that always write a 16- or
// 64-bit length worked with it (20 ms of audio with a 64-bit length, a ping message with a 16-bit one).
TEST(ClientFrameReader, ADataFramesLengthInALongerFormThanItNeedsIsTaken) {
  const std::string audio(640, '\x11');
  std::string long_64 = client_frame(0x2, audio);  // 640 in 16 bits, written in 64
  long_64.replace(1, 3, std::string("\xff\0\0\0\0\0\0\x02\x80", 9));
  const std::string in = long_64 + client_frame(0x1, R"({"type":"ping"})", true, true) +
                         client_frame(0x1, "a", false, true) + client_frame(0x0, "b", true, true);
  for (std::size_t piece : {std::size_t(1), std::size_t(7), in.size()}) {
    auto got = feed(in, piece);
    ASSERT_EQ(got.size(), 3u) << "piece " << piece;
    EXPECT_EQ(got[0].what, ckind::binary);
    EXPECT_TRUE(got[0].data == audio);
    EXPECT_EQ(got[1].what, ckind::text);
    EXPECT_EQ(got[1].data, R"({"type":"ping"})");
    EXPECT_EQ(got[2].what, ckind::text);
    EXPECT_EQ(got[2].data, "ab");
  }
  reader r(1024);  // and a server's, read by this service's own clients (Gladia, LiveKit)
  auto got = read_all(r, server_frame(0x1, "hello", true, true));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].what, kind::text);
  EXPECT_EQ(got[0].data, "hello");
}

TEST(ClientFrameReader, EveryViolationEndsTheReadingWithItsCloseCode) {
  std::string rsv = client_frame(0x1, "a");
  rsv[0] = static_cast<char>(rsv[0] | 0x40);
  std::string long_64 = client_frame(0x1, std::string(200, 'y'));  // its 16-bit length as a 64-bit one
  long_64.replace(1, 3, std::string("\xff\0\0\0\0\0\0\0\xc8", 9));
  const struct {
    std::string bytes;
    std::uint16_t code;
    const char* what;
  } cases[] = {
      {server_frame(0x1, "abcd"), 1002, "unmasked"},
      {rsv, 1002, "reserved"},
      {client_frame(0x3, "a"), 1002, "unknown data"},
      {client_frame(0xB, "a"), 1002, "unknown control"},
      {client_frame(0x0, "a"), 1002, "continuation"},
      {client_frame(0x1, "a", false) + client_frame(0x2, "b"), 1002, "before the last one ended"},
      {client_frame(0x9, "a", false), 1002, "fragmented control"},
      {client_frame(0x9, std::string(126, 'a')), 1002, "longer than 125"},
      {client_frame(0x9, "x", true, true), 1002, "length not in 7 bits"},
      {client_frame(0xA, "", true, true), 1002, "length not in 7 bits"},
      {long_64.replace(2, 1, "\x80"), 1002, "most significant bit"},
      {client_frame(0x8, "\x03"), 1002, "one-byte"},
      {client_frame(0x8, std::string("\x03\xed", 2)), 1002, "invalid code (1005)"},
      {client_frame(0x8, std::string("\x13\x88", 2)), 1002, "invalid code (5000)"},
      {client_frame(0x8, std::string("\x03\xe8\xff", 3)), 1007, "close reason"},
      {client_frame(0x1, "caf\xc3"), 1007, "not UTF-8"},
      {client_frame(0x1, "a", false) + client_frame(0x0, "\xed\xa0\x80"), 1007, "not UTF-8"},  // a surrogate
      {client_frame(0x2, std::string(1025, 'z')), 1009, "larger"},
      {client_frame(0x2, std::string(600, 'z'), false) + client_frame(0x0, std::string(600, 'z')), 1009, "larger"},
  };
  for (const auto& c : cases) {
    for (std::size_t piece : {std::size_t(1), std::size_t(5000)}) {
      auto got = feed(c.bytes, piece, 1024);
      ASSERT_FALSE(got.empty()) << c.what;
      EXPECT_EQ(got.back().what, ckind::error) << c.what;
      EXPECT_EQ(got.back().code, c.code) << c.what;
      EXPECT_NE(got.back().data.find(c.what), std::string::npos) << got.back().data;
      const char* reason = std::string(c.what).rfind("invalid code", 0) == 0 ? "Invalid close code"
                           : c.code == 1009                                  ? "Message too big"
                           : c.code == 1007                                  ? "Invalid UTF-8"
                                                                             : "Protocol error";
      EXPECT_EQ(got.back().reason, reason) << c.what << ": the close reason to send";
    }
  }
  creader r(1024);
  std::vector<std::uint8_t> unmasked = {0x81, 0x01, 'x'};
  std::size_t from = 0, out = 0;
  EXPECT_EQ(r.next(unmasked.data(), from, unmasked.size(), out).what, ckind::error);
  const auto at = from;
  EXPECT_EQ(r.next(unmasked.data(), from, unmasked.size(), out).what, ckind::error) << "it stays ended";
  EXPECT_EQ(from, at) << "and takes nothing more";
}

TEST(ClientFrameReader, AServerFrameHeaderIsFinalUnmaskedInItsShortestForm) {
  for (std::size_t n : {0u, 125u, 126u, 65535u, 65536u}) {
    std::uint8_t h[10];
    const auto size = sw::ws::write_server_header(h, opcode::text, n);
    ASSERT_EQ(size, sw::ws::server_header_size(n)) << n;
    const auto expected = server_frame(0x1, std::string(n, 'x'));
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(h), size), expected.substr(0, size)) << n;
  }
  // RFC 6455 §1.3's example.
  EXPECT_EQ(sw::ws::accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

}  // namespace client_end
