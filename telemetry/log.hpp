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

// A line as the log writes it: one event, one line. Control characters (C0, DEL, C1) are escaped (\n, \t, \x1b,
// \u009b), so that nothing a line quotes (a room or a name from a token, a peer's reason) can end it, forge another
// or reach an operator's terminal as an escape sequence.
std::string one_line(const std::string& line);

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
