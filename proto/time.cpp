#include "proto/time.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace sw {

namespace {

std::string utc(std::int64_t ms, char between, const char* after) {
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02d%c%02d:%02d:%02d.%03d%s", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                between, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000), after);
  return buf;
}

}  // namespace

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string iso8601(std::int64_t ms) {
  return utc(ms, 'T', "Z");
}

std::string sql_timestamp(std::int64_t ms) {
  return utc(ms, ' ', "");
}

}  // namespace sw
