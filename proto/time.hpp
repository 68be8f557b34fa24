// Wall-clock time as it crosses a boundary: milliseconds since the epoch, and their UTC text forms (ISO 8601 in
// JSON, the SQL timestamp form in the database).
#pragma once

#include <cstdint>
#include <string>

namespace sw {

std::int64_t now_ms();                       // wall clock, ms since epoch
std::string iso8601(std::int64_t ms);        // "2026-12-01T16:53:05.123Z"
std::string sql_timestamp(std::int64_t ms);  // "2026-12-01 16:53:05.123"

}  // namespace sw
