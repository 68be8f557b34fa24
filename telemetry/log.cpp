#include "telemetry/log.hpp"

#include <iostream>

#include "proto/json.hpp"
#include "proto/time.hpp"

namespace sw {

std::string one_line(const std::string& line) {
  std::size_t i = 0;
  while (i < line.size() && control_at(line, i) == 0) ++i;
  if (i == line.size()) return line;  // nearly every line: scanned once, written as it is
  static const char hex[] = "0123456789abcdef";
  std::string out(line, 0, i);
  for (; i < line.size(); ++i) {
    const auto n = control_at(line, i);
    const auto b = static_cast<unsigned char>(line[i]);
    if (n == 0) {
      out += line[i];
    } else if (b == '\n') {
      out += "\\n";
    } else if (b == '\t') {
      out += "\\t";
    } else {  // \xHH for C0 and DEL, \u00HH for C1
      const auto c = static_cast<unsigned char>(line[i + n - 1]);
      out += n == 1 ? "\\x" : "\\u00";
      out += hex[c >> 4];
      out += hex[c & 15];
      i += n - 1;
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
