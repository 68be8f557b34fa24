// sessions-ws: the service executable. Configuration comes from the environment (see --help).
#include <execinfo.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>

#include "actors/service.hpp"

namespace {

// A fatal signal (a fault anywhere in the process) leaves a line and a backtrace in the log before the process dies
// the way it would have, so that an operator sees why. Only async-signal-safe calls; backtrace() is called once at
// start so that it loads what it needs then, not in the handler. The main thread's handler runs on its own
// stack, so that even its stack overflow is reported. Sanitized builds keep their own, richer handlers.
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
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
  const char* tail = " (signal ";
  for (const char* p = tail; *p;) line[n++] = *p++;
  if (sig >= 10) line[n++] = static_cast<char>('0' + sig / 10);
  line[n++] = static_cast<char>('0' + sig % 10);
  for (const char* p = "); backtrace:\n"; *p;) line[n++] = *p++;
  (void)!::write(2, line, static_cast<std::size_t>(n));
  void* frames[64];
  int depth = ::backtrace(frames, 64);
  ::backtrace_symbols_fd(frames, depth, 2);
  ::signal(sig, SIG_DFL);  // and die of it, core dump and exit status as without the handler
  ::raise(sig);
}

void install_fatal_signal_handlers() {
  void* warm[1];
  ::backtrace(warm, 1);
  static char alt_stack[64 * 1024];
  stack_t ss{};
  ss.ss_sp = alt_stack;
  ss.ss_size = sizeof alt_stack;
  ::sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_handler = on_fatal_signal;
  sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) ::sigaction(sig, &sa, nullptr);
}
#else
void install_fatal_signal_handlers() {}
#endif

std::string random_secret() {
  std::random_device rd;
  std::string s;
  static const char* hex = "0123456789abcdef";
  for (int i = 0; i < 48; ++i) s.push_back(hex[rd() % 16]);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  install_fatal_signal_handlers();
  bool dev = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << sw::usage_text();
      return 0;
    }
    if (a == "--version") {
      std::cout << "sessions-ws 0.1.0\n";
      return 0;
    }
    if (a == "--dev") {
      dev = true;
      continue;
    }
    std::cerr << "sessions-ws: unknown argument '" << a << "' (see --help)\n";
    return 2;
  }
  sw::config cfg;
  try {
    cfg = sw::load_config([](const char* name) { return std::getenv(name); }, dev);
  } catch (const sw::config_error& e) {
    std::cerr << "sessions-ws: configuration error: " << e.what() << "\n";
    return 2;
  }
  if (cfg.jwt_secret.empty()) {
    cfg.jwt_secret = random_secret();
    std::cerr << "sessions-ws: --dev: generated development TRANSCRIPTION_JWT_SECRET=" << cfg.jwt_secret << "\n";
  }
  // Signals are taken synchronously by this thread only.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  sw::service svc(cfg);
  // A failed core actor stops the process with exit 1, for systemd (Restart=on-failure) or the orchestrator to
  // start it again: a half-working service would drop finals quietly.
  std::atomic<bool> failed{false};
  svc.on_failure([&failed](const std::string&) {
    failed = true;
    ::kill(::getpid(), SIGTERM);  // taken by the sigwait below
  });
  try {
    svc.start();
  } catch (const std::exception& e) {
    std::cerr << "sessions-ws: cannot start: " << e.what() << "\n";
    return 1;
  }
  std::cerr << "sessions-ws: listening on " << (svc.tls() ? "http+https" : "http") << "://" << cfg.host << ":"
            << svc.port() << " (stt provider: " << (svc.context().stt.name.empty() ? "none" : svc.context().stt.name)
            << ")" << std::endl;
  int sig = 0;
  sigwait(&signals, &sig);
  std::cerr << "sessions-ws: "
            << (failed           ? "failure"
                : sig == SIGTERM ? "SIGTERM"
                                 : "SIGINT")
            << ": draining streams (bound " << cfg.shutdown_timeout.count() << " ms)" << std::endl;
  bool drained = svc.shutdown();
  const int code = failed ? 1 : 0;
  std::cerr << "sessions-ws: stopped" << (drained ? "" : " (shutdown bound reached)") << (code ? " (exit 1)" : "")
            << std::endl;
  // Past the bound an actor may still be ending on a thread of its own (a database call that had not returned):
  // leave without running static destructors underneath it. Whatever it had not written is in the journal.
  if (!drained) std::_Exit(code);
  return code;
}
