// The WebSocket frame counter under a server WebSocket (net/client_layer.hpp): any bytes, read in pieces of any
// sizes (the first input byte seeds them), count the same frames as read whole, and as many as a frame-by-frame walk
// of the whole finds. Never a crash, never undefined behaviour.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "net/client_layer.hpp"

namespace {

// Whole frames (headers complete) in [p, p + n): an independent walk, frame by frame.
std::uint64_t walk(const std::uint8_t* p, std::size_t n) {
  std::uint64_t frames = 0;
  std::size_t at = 0;
  while (n - at >= 2) {
    const unsigned len7 = p[at + 1] & 0x7f;
    const std::size_t ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    const std::size_t head = 2 + ext + ((p[at + 1] & 0x80) ? 4 : 0);
    if (n - at < head) break;
    std::uint64_t len = len7;
    if (ext) {
      len = 0;
      for (std::size_t i = 0; i < ext; ++i) len = (len << 8) | p[at + 2 + i];
    }
    ++frames;
    at += head;
    if (len >= n - at) break;
    at += static_cast<std::size_t>(len);
  }
  return frames;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  unsigned seed = data[0];
  const std::uint8_t* p = data + 1;
  const std::size_t n = size - 1;
  sw::net::frame_counter whole, pieces;
  const auto expected = whole.count(p, n);
  if (expected != walk(p, n)) std::abort();
  std::uint64_t seen = 0;
  for (std::size_t at = 0; at < n;) {
    seed = seed * 1103515245u + 12345u;
    const std::size_t k = std::min<std::size_t>(n - at, 1 + (seed >> 16) % 23);
    seen += pieces.count(p + at, k);
    at += k;
  }
  if (seen != expected) std::abort();
  return 0;
}
