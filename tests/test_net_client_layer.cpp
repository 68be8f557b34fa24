#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "net/client_layer.hpp"
#include "net/token_bucket.hpp"

namespace {

using sw::token_bucket;
using sw::net::frame_counter;
using ms = std::chrono::milliseconds;

std::vector<std::uint8_t> masked(std::uint8_t op, std::size_t len, bool fin = true) {
  std::vector<std::uint8_t> f{static_cast<std::uint8_t>((fin ? 0x80 : 0) | op)};
  if (len < 126) {
    f.push_back(static_cast<std::uint8_t>(0x80 | len));
  } else if (len < 65536) {
    f.push_back(0x80 | 126);
    f.push_back(static_cast<std::uint8_t>(len >> 8));
    f.push_back(static_cast<std::uint8_t>(len));
  } else {
    f.push_back(0x80 | 127);
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<std::uint8_t>(static_cast<std::uint64_t>(len) >> (8 * i)));
  }
  f.insert(f.end(), {1, 2, 3, 4});  // the mask
  f.insert(f.end(), len, 0x7e);     // payload bytes that look like headers if miscounted
  return f;
}

// Frames of every header size, read in pieces of every length from 1 byte to all at once: the same count.
TEST(FrameCounter, CountsEveryFrameWhateverTheReadsCutThrough) {
  std::vector<std::uint8_t> stream;
  const std::vector<std::size_t> sizes = {0, 2, 125, 126, 640, 65535, 65536, 70000, 0};
  for (auto n : sizes) {
    auto f = masked(0x2, n);
    stream.insert(stream.end(), f.begin(), f.end());
  }
  for (std::uint8_t op : {0x9, 0xA, 0x0}) {
    auto f = masked(op, 0, op != 0x0);
    stream.insert(stream.end(), f.begin(), f.end());
  }
  const std::uint64_t frames = sizes.size() + 3;
  for (std::size_t piece :
       {std::size_t(1), std::size_t(2), std::size_t(5), std::size_t(13), std::size_t(1000), stream.size()}) {
    frame_counter c;
    std::uint64_t seen = 0;
    for (std::size_t at = 0; at < stream.size(); at += piece)
      seen += c.count(stream.data() + at, std::min(piece, stream.size() - at));
    EXPECT_EQ(seen, frames) << "pieces of " << piece;
  }
}

TEST(FrameCounter, AFrameCountsWhenItsHeaderIsWhole) {
  frame_counter c;
  auto f = masked(0x2, 640);                // a header of 8 bytes: 2, the 16-bit length, the mask
  EXPECT_EQ(c.count(f.data(), 7), 0u);      // cut short
  EXPECT_EQ(c.count(f.data() + 7, 1), 1u);  // its last byte
  EXPECT_EQ(c.count(f.data() + 8, 640), 0u);
}

// The payload bytes of binary messages, read in pieces of every length: binary frames and their continuations count
// as they pass (a frame read in part counts what was read), text messages, their continuations and control frames
// do not.
TEST(FrameCounter, CountsTheBinaryPayloadAsItPasses) {
  std::vector<std::uint8_t> stream;
  auto add = [&](std::uint8_t op, std::size_t n, bool fin = true) {
    auto f = masked(op, n, fin);
    stream.insert(stream.end(), f.begin(), f.end());
  };
  add(0x2, 640);
  add(0x1, 300, false);  // a text message in two frames
  add(0x9, 4);           // a ping between them
  add(0x0, 200);
  add(0x2, 100, false);  // a binary message in three frames
  add(0xA, 0);
  add(0x0, 70000, false);
  add(0x0, 126);
  add(0x8, 2);
  const std::uint64_t binary = 640 + 100 + 70000 + 126;
  for (std::size_t piece : {std::size_t(1), std::size_t(7), std::size_t(640), stream.size()}) {
    frame_counter c;
    for (std::size_t at = 0; at < stream.size(); at += piece)
      c.count(stream.data() + at, std::min(piece, stream.size() - at));
    EXPECT_EQ(c.binary_bytes(), binary) << "pieces of " << piece;
  }
  frame_counter c;
  auto f = masked(0x2, 640);
  c.count(f.data(), 8 + 100);
  EXPECT_EQ(c.binary_bytes(), 100u) << "a frame read in part counts what was read";
}

// The frame budget spends what a read brought, whatever is left: a debt, which the rate pays back before a read
// may go on.
TEST(TokenBucket, SpendingPastItIsADebtTheRefillPaysBackFirst) {
  auto t = token_bucket::clock::now();
  token_bucket b(100, 50, t);
  b.spend(60, t);
  EXPECT_EQ(b.debt_wait(), token_bucket::clock::duration::zero());
  b.spend(90, t);
  EXPECT_DOUBLE_EQ(b.tokens(), -50);
  EXPECT_EQ(std::chrono::duration_cast<ms>(b.debt_wait()), ms(1000));
  EXPECT_FALSE(b.take(1, t + ms(999)));
  EXPECT_TRUE(b.take(1, t + ms(1020)));
  b.spend(0, t + ms(60'000));
  EXPECT_DOUBLE_EQ(b.tokens(), 100) << "never above its capacity";
}

}  // namespace
