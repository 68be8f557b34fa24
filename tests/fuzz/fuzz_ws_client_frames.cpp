// The server end's reader of a client's WebSocket frames (proto/ws_frame.hpp's client_frame_reader), parsing in place
// as the server's connection does: any bytes, given in pieces of any sizes (the first input byte seeds them) and
// moved to the front of the buffer between pieces as the connection compacts it, make the same events as given
// whole; `more` only once everything given is taken; `out` never passes `from`; nothing is taken after a close or an
// error; no message is over the maximum, no text message or close reason is other than UTF-8, a binary message's
// bytes are what lies before `out`, every error names a close code RFC 6455 gives. Never a crash, never undefined
// behaviour.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "proto/json.hpp"
#include "proto/ws_frame.hpp"

namespace {

using reader = sw::ws::client_frame_reader;
constexpr std::size_t max_message = 4096;

struct seen {
  reader::kind what;
  std::string data;
  std::uint16_t code;
  bool operator==(const seen& o) const { return what == o.what && data == o.data && code == o.code; }
};

void check(const reader::event& e) {
  using kind = reader::kind;
  if ((e.what == kind::text || e.what == kind::binary) && e.size > max_message) std::abort();
  if ((e.what == kind::text || e.what == kind::close) && !sw::is_utf8(e.data)) std::abort();
  if (e.what == kind::text && e.data.size() != e.size) std::abort();
  if ((e.what == kind::ping || e.what == kind::pong) && e.data.size() > sw::ws::max_control_payload) std::abort();
  if (e.what == kind::error && e.code != 1002 && e.code != 1007 && e.code != 1009) std::abort();
}

// Feeds `in` in pieces (all at once when seed is 0) into a buffer the reader parses in place, compacting it between
// pieces (the message so far and the bytes not yet parsed moved to its front), and collects the events up to the end
// of the reading.
std::vector<seen> feed(std::string_view in, unsigned seed) {
  reader r(max_message);
  std::vector<std::uint8_t> buf(in.size() + max_message + 16);
  std::size_t from = 0, to = 0, out = 0;
  std::vector<seen> got;
  while (!in.empty()) {
    seed = seed * 1103515245u + 12345u;
    const std::size_t k = seed == 12345u ? in.size() : std::min<std::size_t>(in.size(), 1 + (seed >> 16) % 37);
    // Compact: [out - message_bytes, out) then [from, to) to the front.
    const std::size_t kept = r.message_bytes();
    if (kept > out) std::abort();
    std::memmove(buf.data(), buf.data() + out - kept, kept);
    std::memmove(buf.data() + kept, buf.data() + from, to - from);
    to = kept + (to - from);
    from = out = kept;
    std::memcpy(buf.data() + to, in.data(), k);
    to += k;
    in.remove_prefix(k);
    for (;;) {
      auto e = r.next(buf.data(), from, to, out);
      if (out > from || from > to) std::abort();
      if (e.what == reader::kind::more) {
        if (from != to) std::abort();  // `more` only once everything given is taken
        break;
      }
      check(e);
      if (e.what == reader::kind::binary) {
        if (e.size > out) std::abort();
        e.data.assign(reinterpret_cast<const char*>(buf.data()) + out - e.size, e.size);
      }
      got.push_back({e.what, e.data, e.code});
      if (e.what == reader::kind::close || e.what == reader::kind::error) {
        const auto at = from;
        if (r.next(buf.data(), from, to, out).what != e.what || from != at) std::abort();  // it stays ended
        return got;
      }
    }
  }
  return got;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto whole = feed(in, 0);
  if (feed(in, data[0] | 1u) != whole) std::abort();
  return 0;
}
