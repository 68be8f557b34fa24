// LiveKit's Twirp answers and webhooks (proto/livekit): whatever a LiveKit server, or something posing as one, answers
// or posts, reading it neither crashes nor hangs, what is read back is in the shapes promised, and no webhook passes
// the signature check without the secret.
#include <cstddef>
#include <cstdint>
#include <string>
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
  // A webhook: its body, and the same bytes as its Authorization header (never accepted: nobody has the secret).
  if (auto w = sw::parse_livekit_webhook(text); w && w->event.empty()) __builtin_trap();
  if (sw::verify_livekit_webhook(std::string(text), text, "key", "secret").empty()) __builtin_trap();
  return 0;
}
