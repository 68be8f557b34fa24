// Client text frames and HTTP bodies: whatever arrives, parsing neither crashes nor hangs, and what the service
// sends back about it (a warning that echoes the type) is a JSON object in valid UTF-8.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "proto/json.hpp"
#include "proto/rapidjson.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto m = sw::parse_client_message(text);
  auto warning = sw::json_warning("unknown_message", "unknown message type: " + m.type + m.identity + m.name);
  if (sw::valid_utf8(warning) != warning) __builtin_trap();
  rapidjson::Document d;
  if (!sw::parse_json(d, warning) || !d.IsObject()) __builtin_trap();
  auto body = sw::parse_json_object(text);
  (void)body.get("sessionSlug");
  (void)body.get_int("timestamp");
  return 0;
}
