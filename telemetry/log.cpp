#include "telemetry/log.hpp"

#include <iostream>

#include "proto/time.hpp"

namespace sw {

logger::logger(const std::string& level) {
  level_ = level == "error"   ? log_level::error
           : level == "warn"  ? log_level::warn
           : level == "debug" ? log_level::debug
                              : log_level::info;
}

void logger::write(log_level l, const std::string& line) {
  static const char* names[] = {"error", "warn", "info", "debug"};
  std::lock_guard<std::mutex> lock(mu_);
  std::cerr << iso8601(now_ms()) << ' ' << names[static_cast<int>(l)] << ' ' << line << '\n';
}

}  // namespace sw
