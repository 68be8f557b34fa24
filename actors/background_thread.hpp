// The threads of detached actors whose work can wait a few milliseconds: the journal and the database
// (persistence), the memory trim.
#pragma once

#include "actors/context.hpp"

namespace sw {

// Makes the calling thread SCHED_BATCH. A message to such a thread still wakes it, but no longer preempts the I/O
// thread that sent it: it runs when that thread waits or its time slice ends, and then takes everything queued by
// then in one turn (a final to journal comes every 2 s of each participant's audio). Under load it keeps its fair
// share of the CPU, as any SCHED_OTHER thread; only the wake-up preemption goes. Where the system refuses (a seccomp
// profile), the thread stays as it was and the refusal is logged: nothing else changes.
void become_background_thread(const context_ptr& ctx, const char* who);

}  // namespace sw
