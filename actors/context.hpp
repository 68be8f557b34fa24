// What every actor of one service instance shares: read-only configuration and thread-safe sinks (metrics, the
// socket figures of net/, the log), and how a session gets its STT relay.
#pragma once

#include <memory>
#include <string>

#include "config/config.hpp"
#include "net/livekit_client.hpp"
#include "net/stats.hpp"
#include "proto/actors.hpp"
#include "telemetry/log.hpp"
#include "telemetry/metrics.hpp"

namespace sw {

struct service_context {
  config cfg;
  metrics_ptr metrics;
  std::shared_ptr<net::net_stats> net;
  std::shared_ptr<logger> log;
  stt_provider stt;                                    // spawn empty = no provider configured
  persistence_actor persistence;                       // invalid = no persistence configured
  std::shared_ptr<const net::livekit_client> livekit;  // null = LiveKit not configured (routes answer 503)
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

}  // namespace sw
