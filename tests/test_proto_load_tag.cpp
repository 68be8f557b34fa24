// The loadgen's frame tags (proto/load_tag.hpp): written and read back, and found at every frame boundary however a
// relay merges or cuts the frames on their way upstream.
#include <vector>

#include <gtest/gtest.h>

#include "proto/load_tag.hpp"

namespace {

std::vector<std::uint8_t> frames(std::uint32_t participant, std::uint32_t first, int count, std::uint16_t size) {
  std::vector<std::uint8_t> out;
  for (int i = 0; i < count; ++i) {
    std::vector<std::uint8_t> f(size, static_cast<std::uint8_t>('L'));  // audio that looks like a magic
    sw::write_load_tag(f.data(), {size, participant, first + static_cast<std::uint32_t>(i), 1'000'000 + i});
    out.insert(out.end(), f.begin(), f.end());
  }
  return out;
}

TEST(LoadTag, RoundTrips) {
  std::uint8_t b[20];
  sw::write_load_tag(b, {640, 7, 123456, 987654321012345});
  auto t = sw::read_load_tag(b);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->frame_bytes, 640);
  EXPECT_EQ(t->participant, 7u);
  EXPECT_EQ(t->sequence, 123456u);
  EXPECT_EQ(t->sent_ns, 987654321012345);
  b[1] = 'X';
  EXPECT_FALSE(sw::read_load_tag(b));
}

// Chunks of every size from 1 byte to five frames and more, so tags are cut anywhere: every frame is found once, in
// order, and the frame completing each chunk is marked.
TEST(LoadTag, EveryFrameIsFoundInsideMergedAndCutChunks) {
  const auto stream = frames(3, 10, 50, 640);
  for (std::size_t chunk : {1u, 7u, 19u, 20u, 21u, 640u, 641u, 3'200u, 5'000u, 32'000u}) {
    sw::load_tag_reader r;
    std::vector<std::uint32_t> seen;
    std::size_t lasts = 0, chunks_with_frames = 0;
    for (std::size_t at = 0; at < stream.size(); at += chunk) {
      const auto n = std::min(chunk, stream.size() - at);
      std::size_t in_chunk = 0;
      r.feed(stream.data() + at, n, [&](const sw::load_tag& t, bool last) {
        seen.push_back(t.sequence);
        ++in_chunk;
        if (last) ++lasts;
      });
      if (in_chunk) ++chunks_with_frames;
      // a frame completes in this chunk exactly when the chunk reaches past a frame end
      EXPECT_EQ(in_chunk, (at + n) / 640 - at / 640) << "chunk " << chunk << " at " << at;
    }
    ASSERT_EQ(seen.size(), 50u) << "chunk size " << chunk;
    for (std::uint32_t i = 0; i < 50; ++i) EXPECT_EQ(seen[i], 10 + i);
    EXPECT_EQ(lasts, chunks_with_frames) << "one `last` per chunk that completed frames";
    EXPECT_FALSE(r.broken());
  }
}

TEST(LoadTag, AStreamWithoutTagsIsBrokenNotMisread) {
  std::vector<std::uint8_t> pcm(6'400, 0);
  sw::load_tag_reader r;
  int found = 0;
  r.feed(pcm.data(), pcm.size(), [&](const sw::load_tag&, bool) { ++found; });
  EXPECT_EQ(found, 0);
  EXPECT_TRUE(r.broken());
  // Bytes lost in the middle (a relay that dropped some): the frame they were cut from still ends where its length
  // says, the next tag is not where it should be, and the reading stops there.
  auto s = frames(1, 0, 4, 640);
  s.erase(s.begin() + 700, s.begin() + 710);
  sw::load_tag_reader r2;
  r2.feed(s.data(), s.size(), [&](const sw::load_tag&, bool) { ++found; });
  EXPECT_EQ(found, 2);
  EXPECT_TRUE(r2.broken());
}

}  // namespace
