// Numbers as people type them into a query string or a command line.
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string_view>

namespace sw {

// A whole number from `min` to `max` written in decimal digits only (no sign, no space, nothing after it), or nothing.
inline std::optional<std::uint64_t> whole_number(std::string_view text, std::uint64_t min, std::uint64_t max) {
  std::uint64_t v = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || p != end || v < min || v > max) return std::nullopt;
  return v;
}

}  // namespace sw
