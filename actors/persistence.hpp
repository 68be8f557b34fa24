// The persistence actor: the only user of storage/. Journals every final before it counts as accepted,
// batches finals into the database (PERSIST_FLUSH_MS / PERSIST_BATCH, one transaction per batch), retries
// failed batches with backoff (never dropped, never counted as flushed), replays the journal at start-up,
// bounds memory (PERSIST_MAX_PENDING). Runs detached. Every database call (open, migrate, write, read) runs in
// a second detached actor of its own, so a slow commit or a dead server never holds up the journal.
#pragma once

#include "actors/context.hpp"

namespace sw {

// Spawns the persistence actor (detached). Opening the database may fail: the actor then keeps journaling
// and retries, and /ready reports the database as down.
persistence_actor spawn_persistence(caf::actor_system& sys, context_ptr ctx);

}  // namespace sw
