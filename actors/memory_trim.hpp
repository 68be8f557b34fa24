// The memory trim actor (proto/actors.hpp: memory_trim_actor).
#pragma once

#include "actors/context.hpp"

namespace sw {

// Detached; trims at once and then every ctx->cfg.memory_trim_interval (spawn it only when that is above 0).
memory_trim_actor spawn_memory_trim(caf::actor_system& sys, context_ptr ctx);

}  // namespace sw
