// The log flush actor (proto/actors.hpp: log_flush_actor).
#pragma once

#include "actors/context.hpp"

namespace sw {

// Every second, the log lines the throttle left out are counted in a line per kind (metrics::flush_suppressed).
log_flush_actor spawn_log_flush(caf::actor_system& sys, context_ptr ctx);

}  // namespace sw
