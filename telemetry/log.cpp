#include "telemetry/log.hpp"

#include <iostream>

#include "proto/time.hpp"

namespace sw {

namespace {

bool is_c1(const std::string& s, std::size_t i) {  // U+0080..U+009F in UTF-8: C2 80..C2 9F
  return static_cast<unsigned char>(s[i]) == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) >= 0x80 &&
         static_cast<unsigned char>(s[i + 1]) <= 0x9f;
}

bool is_control(unsigned char b) {
  return b < 0x20 || b == 0x7f;
}

}  // namespace

std::string one_line(const std::string& line) {
  bool clean = true;
  for (std::size_t i = 0; i < line.size() && clean; ++i)
    clean = !is_control(static_cast<unsigned char>(line[i])) && !is_c1(line, i);
  if (clean) return line;
  static const char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(line.size() + 16);
  for (std::size_t i = 0; i < line.size(); ++i) {
    const auto b = static_cast<unsigned char>(line[i]);
    if (b == '\n') {
      out += "\\n";
    } else if (b == '\t') {
      out += "\\t";
    } else if (is_control(b)) {
      out += "\\x";
      out += hex[b >> 4];
      out += hex[b & 15];
    } else if (is_c1(line, i)) {
      const auto c = static_cast<unsigned char>(line[++i]);
      out += "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += line[i];
    }
  }
  return out;
}

logger::logger(const std::string& level) {
  level_ = level == "error"   ? log_level::error
           : level == "warn"  ? log_level::warn
           : level == "debug" ? log_level::debug
                              : log_level::info;
}

void logger::write(log_level l, const std::string& line) {
  static const char* names[] = {"error", "warn", "info", "debug"};
  std::lock_guard<std::mutex> lock(mu_);
  std::cerr << iso8601(now_ms()) << ' ' << names[static_cast<int>(l)] << ' ' << one_line(line) << '\n';
}

}  // namespace sw
