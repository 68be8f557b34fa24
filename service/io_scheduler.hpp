// CAF's scheduler on the I/O threads. The service's actors run on the threads that do its socket I/O, so a frame
// read from a client, the session actor's decision about it and the upstream write it leads to happen on one thread,
// one after the other, instead of crossing to a CAF worker and back (two thread hand-offs and their wake-ups per
// chunk). Actors keep every decision; only where they run changes. Blocking work stays in detached actors, which have
// threads of their own.
#pragma once

#include <caf/actor_system_config.hpp>

namespace boost::asio {
class io_context;
}

namespace sw {

// Makes the actor system built from `cfg` schedule its (non-detached) actors on `io`. `io` must be run by its
// threads until the actor system has been destroyed.
void use_io_scheduler(caf::actor_system_config& cfg, boost::asio::io_context& io);

}  // namespace sw
