#include "service/fatal_signal.hpp"

#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <initializer_list>

namespace sw {

#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)

namespace {

std::atomic<bool> installed{false};
constexpr std::size_t alt_stack_bytes = 64 * 1024;

// Only async-signal-safe calls: write, backtrace (loaded at install time), backtrace_symbols_fd, signal, raise.
void on_fatal_signal(int sig) {
  char line[96];
  const char* name = sig == SIGSEGV   ? "SIGSEGV"
                     : sig == SIGBUS  ? "SIGBUS"
                     : sig == SIGFPE  ? "SIGFPE"
                     : sig == SIGILL  ? "SIGILL"
                     : sig == SIGABRT ? "SIGABRT"
                                      : "signal";
  int n = 0;
  for (const char* p = "sessions-ws: fatal "; *p;) line[n++] = *p++;
  for (const char* p = name; *p;) line[n++] = *p++;
  for (const char* p = " (signal "; *p;) line[n++] = *p++;
  if (sig >= 10) line[n++] = static_cast<char>('0' + sig / 10);
  line[n++] = static_cast<char>('0' + sig % 10);
  for (const char* p = "); backtrace:\n"; *p;) line[n++] = *p++;
  (void)!::write(2, line, static_cast<std::size_t>(n));
  void* frames[64];
  int depth = ::backtrace(frames, 64);
  ::backtrace_symbols_fd(frames, depth, 2);
  ::signal(sig, SIG_DFL);  // and die of it: core dump and exit status as without the handler
  ::raise(sig);
}

// The calling thread's alternate stack, for as long as the thread lives.
struct thread_alt_stack {
  void* memory = nullptr;
  thread_alt_stack() {
    memory = std::malloc(alt_stack_bytes);
    if (!memory) return;
    stack_t ss{};
    ss.ss_sp = memory;
    ss.ss_size = alt_stack_bytes;
    if (::sigaltstack(&ss, nullptr) != 0) {
      std::free(memory);
      memory = nullptr;
    }
  }
  ~thread_alt_stack() {
    if (!memory) return;
    stack_t ss{};
    ss.ss_flags = SS_DISABLE;
    ::sigaltstack(&ss, nullptr);
    std::free(memory);
  }
  thread_alt_stack(const thread_alt_stack&) = delete;
  thread_alt_stack& operator=(const thread_alt_stack&) = delete;
};

}  // namespace

void install_fatal_signal_handlers() {
  void* warm[1];
  ::backtrace(warm, 1);  // loads what backtrace needs now, not in the handler
  installed = true;
  prepare_thread_for_fatal_signals();
  struct sigaction sa {};
  sa.sa_handler = on_fatal_signal;
  sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) ::sigaction(sig, &sa, nullptr);
}

void prepare_thread_for_fatal_signals() {
  if (!installed) return;
  thread_local thread_alt_stack stack;
  (void)stack;
}

#else

void install_fatal_signal_handlers() {}
void prepare_thread_for_fatal_signals() {}

#endif

}  // namespace sw
