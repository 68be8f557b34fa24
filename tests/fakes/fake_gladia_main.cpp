// sessions-ws-fake-gladia: the fake Gladia of the tests as a program, for load tests against a server this tool does
// not run in-process (sessions-ws-loadgen --upstream-stats reads its figures). Acknowledges every chunk with its
// cumulative byte_range, a partial every --partial-ms and a final every --final-ms of audio per stream, finals after
// stop_recording; reads the loadgen's frame tags and stamps each transcript with its emit time; GET /stats,
// GET /window, POST /reset.
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "tests/fakes/fake_gladia.hpp"

namespace {

const char* usage =
    "Usage: sessions-ws-fake-gladia [options]\n"
    "  --port N          listen on N (default 8089)      --host ADDR (default 127.0.0.1)\n"
    "  --api-key KEY     the x-gladia-key it accepts (default fake-gladia-key)\n"
    "  --partial-ms MS   a partial per MS of audio per stream (default 300)\n"
    "  --final-ms MS     a final per MS of audio per stream (default 2000)\n"
    "  --threads N       I/O threads (default 1)\n"
    "  --session-limit-ms MS   end each session when its audio would pass MS (Gladia ends a live session at 3 h):\n"
    "                    the server must go on in a new one (default: never)\n"
    "  --lose-after-ms MS   lose each session when its audio would pass MS (its host went away): the connection\n"
    "                    drops and the session's url refuses every reconnect; the server must go on in a new one\n"
    "                    (default: never)\n"
    "  --tls-cert FILE --tls-key FILE   HTTPS + WSS\n"
    "Point the server at it: GLADIA_API_URL=http://HOST:PORT GLADIA_API_KEY=<key>. GET /stats: its figures.\n"
    "GET /window?from=NS&to=NS: the load's steady window (frames sent then, CLOCK_MONOTONIC ns, also count in\n"
    "the steady relay figures); sessions-ws-loadgen --upstream-stats sets it. POST /reset: figures afresh (the\n"
    "loadgen does it as it starts: one loadgen at a time per fake).\n"
    "Runs until SIGINT or SIGTERM. Exit codes: 0 stopped, 1 cannot listen, 2 bad arguments.\n";

volatile std::sig_atomic_t stop = 0;

long number(const std::string& opt, const std::string& v, long lo, long hi) {
  char* end = nullptr;
  long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end || n < lo || n > hi) {
    std::cerr << "sessions-ws-fake-gladia: " << opt << " needs a number from " << lo << " to " << hi << "\n";
    std::exit(2);
  }
  return n;
}

}  // namespace

int main(int argc, char** argv) {
  auto o = sw::test::fake_gladia::load_options();
  o.port = 8089;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "sessions-ws-fake-gladia: " << a << " needs a value\n" << usage;
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::cout << usage;
      return 0;
    } else if (a == "--port") {
      o.port = static_cast<std::uint16_t>(number(a, next(), 1, 65535));
    } else if (a == "--host") {
      o.host = next();
    } else if (a == "--api-key") {
      o.api_key = next();
    } else if (a == "--partial-ms") {
      o.partial_every = std::chrono::milliseconds(number(a, next(), 10, 60'000));
    } else if (a == "--final-ms") {
      o.final_every = std::chrono::milliseconds(number(a, next(), 10, 600'000));
    } else if (a == "--session-limit-ms") {
      o.session_limit = std::chrono::milliseconds(number(a, next(), 100, 86'400'000));
    } else if (a == "--lose-after-ms") {
      o.lose_after = std::chrono::milliseconds(number(a, next(), 100, 86'400'000));
    } else if (a == "--threads") {
      o.threads = static_cast<int>(number(a, next(), 1, 64));
    } else if (a == "--tls-cert") {
      o.tls_cert_file = next();
    } else if (a == "--tls-key") {
      o.tls_key_file = next();
    } else {
      std::cerr << "sessions-ws-fake-gladia: unknown argument " << a << "\n" << usage;
      return 2;
    }
  }
  std::unique_ptr<sw::test::fake_gladia> fake;
  try {
    fake = std::make_unique<sw::test::fake_gladia>(o);
  } catch (const std::exception& e) {
    std::cerr << "sessions-ws-fake-gladia: cannot listen on " << o.host << ":" << o.port << ": " << e.what() << "\n";
    return 1;
  }
  std::signal(SIGINT, [](int) { stop = 1; });
  std::signal(SIGTERM, [](int) { stop = 1; });
  std::cerr << "fake Gladia on " << fake->url() << " (key " << o.api_key << ")\n";
  while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::cout << fake->load_json() << "\n";
  return 0;
}
