// LiveKit's Twirp answers (proto/livekit): whatever a LiveKit server, or something posing as one, answers, reading
// it neither crashes nor hangs, and what is read back is in the shapes promised.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "proto/livekit.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto ps = sw::parse_livekit_participants(text))
    for (auto& p : *ps)
      for (auto& t : p.tracks) (void)t.sid.size();
  if (auto e = sw::parse_livekit_egress(text); e && e->egress_id.empty()) __builtin_trap();
  if (auto list = sw::parse_livekit_egress_list(text))
    for (auto& e : *list) (void)e.active();
  if (sw::livekit_error_message(500, text).rfind("LiveKit ", 0) != 0) __builtin_trap();
  return 0;
}
