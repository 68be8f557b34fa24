// sessions-ws: the service executable. Configuration comes from the environment (see --help).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>

#include "service/fatal_signal.hpp"
#include "service/service.hpp"

namespace {

std::string random_secret() {
  std::random_device rd;
  std::string s;
  static const char* hex = "0123456789abcdef";
  for (int i = 0; i < 48; ++i) s.push_back(hex[rd() % 16]);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  sw::install_fatal_signal_handlers();
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
  sigaddset(&signals, SIGHUP);  // a renewed TLS certificate: loaded for new connections
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
  for (;;) {
    sigwait(&signals, &sig);
    if (sig != SIGHUP || failed) break;
    try {
      if (svc.reload_tls()) {
        std::cerr << "sessions-ws: SIGHUP: TLS certificate and key loaded again from " << cfg.tls_cert_file << ", "
                  << cfg.tls_key_file << " (new connections get them; open ones keep theirs)" << std::endl;
      } else {
        std::cerr << "sessions-ws: SIGHUP: no TLS configured, nothing to reload" << std::endl;
      }
    } catch (const std::exception&) {
      // logged by the server with its reason (net.tls_reload_failures); the certificate in use serves on
    }
  }
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
