// The client end's reader of a server's WebSocket frames (proto/ws_frame.hpp): any bytes, given in pieces of any
// sizes (the first input byte seeds them), make the same events as given whole; nothing is taken after a close or
// an error; no message is over the maximum, no text message or close reason is other than UTF-8, every error names a
// close code RFC 6455 gives. Never a crash, never undefined behaviour.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "proto/json.hpp"
#include "proto/ws_frame.hpp"

namespace {

using reader = sw::ws::server_frame_reader;
constexpr std::size_t max_message = 4096;

struct seen {
  reader::kind what;
  std::string data;
  std::uint16_t code;
  bool operator==(const seen& o) const { return what == o.what && data == o.data && code == o.code; }
};

void check(const reader::event& e) {
  using kind = reader::kind;
  if ((e.what == kind::text || e.what == kind::binary) && e.data.size() > max_message) std::abort();
  if ((e.what == kind::text || e.what == kind::close) && !sw::is_utf8(e.data)) std::abort();
  if ((e.what == kind::ping || e.what == kind::pong) && e.data.size() > sw::ws::max_control_payload) std::abort();
  if (e.what == kind::error && e.code != 1002 && e.code != 1007 && e.code != 1009) std::abort();
}

// Feeds `in` in pieces (all at once when seed is 0) and collects the events up to the end of the reading.
std::vector<seen> feed(std::string_view in, unsigned seed) {
  reader r(max_message);
  std::vector<seen> out;
  while (!in.empty()) {
    seed = seed * 1103515245u + 12345u;
    const std::size_t k = seed == 12345u ? in.size() : std::min<std::size_t>(in.size(), 1 + (seed >> 16) % 37);
    std::string_view piece = in.substr(0, k);
    in.remove_prefix(k);
    for (;;) {
      auto e = r.next(piece);
      if (e.what == reader::kind::more) {
        if (!piece.empty()) std::abort();  // `more` only once everything given is taken
        break;
      }
      check(e);
      out.push_back({e.what, e.data, e.code});
      if (e.what == reader::kind::close || e.what == reader::kind::error) {
        const auto left = piece.size();
        if (r.next(piece).what != e.what || piece.size() != left) std::abort();  // it stays ended
        return out;
      }
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto whole = feed(in, 0);
  if (feed(in, data[0] | 1u) != whole) std::abort();
  return 0;
}
