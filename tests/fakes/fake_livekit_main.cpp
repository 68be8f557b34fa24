// sessions-ws-fake-livekit: the fake LiveKit of the tests as a program, for trying room transcription without a
// LiveKit server (script/server --fake-livekit). One room; each --participant publishes one audio track whose egress
// streams a recording (any WAV: read by libsndfile, resampled by libsoxr to 48 kHz stereo, as LiveKit sends it).
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "apps/audio_file.hpp"
#include "tests/fakes/fake_livekit.hpp"
#include "tests/support/librivox.hpp"

namespace {

const char* usage =
    "Usage: sessions-ws-fake-livekit [options]\n"
    "  --port N                  listen on 127.0.0.1:N (default 7880)\n"
    "  --api-key KEY             LIVEKIT_API_KEY the service uses (default devkey)\n"
    "  --api-secret SECRET       LIVEKIT_API_SECRET (default: LIVEKIT_API_SECRET from the environment)\n"
    "  --room NAME               the room (default demo)\n"
    "  --participant ID[:NAME]=FILE   a participant publishing FILE as its microphone (repeatable)\n"
    "  --webhook-url URL         where LiveKit's webhooks go (e.g. http://127.0.0.1:3001/api/livekit/webhook)\n"
    "  --pace X                  egress audio at X times real time (default 1)\n"
    "Runs until SIGINT or SIGTERM. Exit codes: 0 stopped, 2 bad arguments or unreadable audio.\n";

volatile std::sig_atomic_t stop = 0;

}  // namespace

int main(int argc, char** argv) {
  sw::test::fake_livekit::options o;
  o.port = 7880;
  o.api_key = "devkey";
  o.pace = 1.0;
  if (const char* s = std::getenv("LIVEKIT_API_SECRET")) o.api_secret = s;
  std::string room = "demo";
  struct person {
    std::string identity, name, file;
  };
  std::vector<person> people;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "sessions-ws-fake-livekit: " << a << " needs a value\n" << usage;
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      std::cout << usage;
      return 0;
    } else if (a == "--port") {
      auto v = next();
      char* end = nullptr;
      long p = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || *end || p < 1 || p > 65535) {
        std::cerr << "sessions-ws-fake-livekit: --port needs a port number\n";
        return 2;
      }
      o.port = static_cast<std::uint16_t>(p);
    } else if (a == "--api-key") {
      o.api_key = next();
    } else if (a == "--api-secret") {
      o.api_secret = next();
    } else if (a == "--room") {
      room = next();
    } else if (a == "--webhook-url") {
      o.webhook_url = next();
    } else if (a == "--pace") {
      auto v = next();
      char* end = nullptr;
      o.pace = std::strtod(v.c_str(), &end);
      if (v.empty() || *end || !(o.pace > 0 && o.pace <= 2)) {
        std::cerr << "sessions-ws-fake-livekit: --pace needs a number above 0, at most 2\n";
        return 2;
      }
    } else if (a == "--participant") {
      auto v = next();
      auto eq = v.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == v.size()) {
        std::cerr << "sessions-ws-fake-livekit: --participant needs ID[:NAME]=FILE\n";
        return 2;
      }
      const std::string who = v.substr(0, eq);
      const auto colon = who.find(':');
      people.push_back(
          {who.substr(0, colon), colon == std::string::npos ? who : who.substr(colon + 1), v.substr(eq + 1)});
    } else {
      std::cerr << "sessions-ws-fake-livekit: unknown argument " << a << "\n" << usage;
      return 2;
    }
  }
  std::vector<std::string> audio;
  std::string mix;
  for (auto& p : people) {
    try {
      audio.push_back(sw::test::as_egress(sw::load_audio(p.file)));
      mix += audio.back();
    } catch (const std::exception& e) {
      std::cerr << "sessions-ws-fake-livekit: " << p.file << ": " << e.what() << "\n";
      return 2;
    }
  }
  std::unique_ptr<sw::test::fake_livekit> lk;
  try {
    lk = std::make_unique<sw::test::fake_livekit>(o);
  } catch (const std::exception& e) {
    std::cerr << "sessions-ws-fake-livekit: cannot listen on port " << o.port << ": " << e.what() << "\n";
    return 1;
  }
  for (std::size_t i = 0; i < people.size(); ++i)
    lk->publish(room, people[i].identity, people[i].name, "TR_" + people[i].identity, audio[i]);
  lk->set_room_audio(mix);  // LIVEKIT_EGRESS_MODE=room hears them one after the other
  std::signal(SIGINT, [](int) { stop = 1; });
  std::signal(SIGTERM, [](int) { stop = 1; });
  std::cerr << "fake LiveKit on " << lk->url() << " (API key " << o.api_key << "), room " << room << " with "
            << people.size() << " participant(s)\n";
  while (!stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return 0;
}
