// What Gladia (or anything posing as it) sends: decoding never crashes, and an ack it accepts has finite offsets.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proto/gladia_message.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto m = sw::parse_gladia_message(std::string_view(reinterpret_cast<const char*>(data), size));
  if (m.what == sw::gladia_message::kind::ack && !std::isfinite(m.ack_end)) __builtin_trap();
  if (m.what == sw::gladia_message::kind::transcript && !std::isfinite(m.transcript.start)) __builtin_trap();
  return 0;
}
