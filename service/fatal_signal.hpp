// A fault that kills the process (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT), on any thread, leaves a line and a
// backtrace on stderr before the process dies of it as it would have, so that an operator sees why. A stack
// overflow too: every thread of the service (main, I/O, actor workers, detached actors) gets an alternate signal
// stack for the handler to run on. Sanitized builds keep the sanitizers' own, richer reports: there, both calls do
// nothing.
#pragma once

namespace sw {

// Once, early in main, before any thread starts.
void install_fatal_signal_handlers();

// On each thread as it starts (after install_fatal_signal_handlers; a no-op without it): its own alternate signal
// stack, released when the thread ends.
void prepare_thread_for_fatal_signals();

}  // namespace sw
