// What every actor of one service instance shares: read-only configuration and thread-safe sinks.
#pragma once

#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>

#include "actors/config.hpp"
#include "actors/metrics.hpp"
#include "net/server.hpp"
#include "proto/actors.hpp"

namespace sw {

enum class log_level { error = 0, warn = 1, info = 2, debug = 3 };

// Line-oriented log to stderr; one instance per service.
class logger {
public:
  explicit logger(const std::string& level);
  bool enabled(log_level l) const { return l <= level_; }
  void write(log_level l, const std::string& line);

private:
  log_level level_;
  std::mutex mu_;
};

struct service_context {
  config cfg;
  metrics_ptr metrics;
  std::shared_ptr<net::net_stats> net;
  std::shared_ptr<logger> log;
  stt_provider stt;               // spawn empty = no provider configured
  persistence_actor persistence;  // invalid = no persistence configured
};

using context_ptr = std::shared_ptr<const service_context>;

// A provider whose `spawn(sys, ctx, who, listener)` gets the context: held weakly, because the context owns the
// provider and the two would otherwise keep each other alive forever.
template <class Spawn>
stt_provider make_provider(std::string name, const context_ptr& ctx, Spawn spawn) {
  stt_provider p;
  p.name = std::move(name);
  std::weak_ptr<const service_context> weak = ctx;
  p.spawn = [weak, spawn](caf::actor_system& sys, const stream_identity& who,
                          stt_listener_actor listener) -> stt_relay_actor {
    auto c = weak.lock();
    if (!c) return {};
    return spawn(sys, c, who, listener);
  };
  return p;
}

#define SW_LOG(ctx, lvl, expr)                                     \
  do {                                                             \
    if ((ctx)->log->enabled(::sw::log_level::lvl)) {               \
      std::ostringstream sw_log_line_;                             \
      sw_log_line_ << expr;                                        \
      (ctx)->log->write(::sw::log_level::lvl, sw_log_line_.str()); \
    }                                                              \
  } while (false)

}  // namespace sw
