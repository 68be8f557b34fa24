// The service's log: one line per event on stderr ("<ISO 8601> <level> <text>"), one instance per service.
#pragma once

#include <mutex>
#include <sstream>
#include <string>

namespace sw {

enum class log_level { error = 0, warn = 1, info = 2, debug = 3 };

class logger {
public:
  explicit logger(const std::string& level);  // error | warn | info (anything else) | debug
  bool enabled(log_level l) const { return l <= level_; }
  void write(log_level l, const std::string& line);

private:
  log_level level_;
  std::mutex mu_;
};

// SW_LOG(ctx, warn, "x=" << x): formats only when the level is enabled; `ctx->log` is the logger.
#define SW_LOG(ctx, lvl, expr)                                     \
  do {                                                             \
    if ((ctx)->log->enabled(::sw::log_level::lvl)) {               \
      std::ostringstream sw_log_line_;                             \
      sw_log_line_ << expr;                                        \
      (ctx)->log->write(::sw::log_level::lvl, sw_log_line_.str()); \
    }                                                              \
  } while (false)

}  // namespace sw
