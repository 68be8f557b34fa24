#include "actors/log_flush.hpp"

#include <chrono>

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace sw {

namespace {

log_flush_actor::behavior_type log_flush(log_flush_actor::pointer self, context_ptr ctx) {
  self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
  return {
      [=](tick_atom) {
        ctx->metrics->flush_suppressed();
        self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
      },
  };
}

}  // namespace

log_flush_actor spawn_log_flush(caf::actor_system& sys, context_ptr ctx) {
  return sys.spawn(log_flush, std::move(ctx));
}

}  // namespace sw
