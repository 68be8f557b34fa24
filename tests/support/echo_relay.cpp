#include "tests/support/echo_relay.hpp"

#include <chrono>

#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace sw::test {

namespace {

struct echo_state {
  static inline const char* name = "echo_relay";
  stt_listener_actor listener;
  echo_options opts;
  std::uint64_t n = 0;
  double seconds = 0;
  std::chrono::steady_clock::time_point drain_end;  // while draining, "stopped" comes then
};

stt_relay_actor::behavior_type echo_relay(stt_relay_actor::stateful_pointer<echo_state> self,
                                          stt_listener_actor listener, echo_options opts) {
  self->state.listener = listener;
  self->state.opts = opts;
  if (!opts.fail_code.empty()) {
    self->send(listener, error_atom::value, stt_error{opts.fail_code, "scripted failure"});
    self->send(listener, status_atom::value, stt_status{"stopped", "echo"});
    self->quit();
    return {[](audio_atom, audio_chunk&) {}, [](stop_atom) {}};
  }
  self->send(listener, status_atom::value, stt_status{"ready", "echo"});
  return {
      [=](audio_atom, audio_chunk& chunk) {
        auto& s = self->state;
        if (s.opts.capture) {
          std::lock_guard<std::mutex> lock(s.opts.capture->mu);
          s.opts.capture->pcm.append(chunk.pcm.begin(), chunk.pcm.end());
        }
        ++s.n;
        double start = s.seconds;
        s.seconds += static_cast<double>(chunk.pcm.size()) / 32000.0;
        std::string id = "u" + std::to_string(s.n);
        std::string text = "chunk " + std::to_string(s.n) + " " + std::to_string(chunk.pcm.size()) + "B";
        if (s.opts.partials)
          self->send(s.listener, heard_atom::value, stt_transcript{id, text, false, "en", start, s.seconds});
        std::string final_text = text + std::string(s.opts.padding, '.');
        if (s.opts.final_delay.count() > 0)  // as a real recognizer: the final comes after the speech
          self->delayed_send(s.listener, s.opts.final_delay, heard_atom::value,
                             stt_transcript{id, final_text, true, "en", start, s.seconds});
        else
          self->send(s.listener, heard_atom::value, stt_transcript{id, final_text, true, "en", start, s.seconds});
        if (s.opts.duplicate_finals)
          self->send(s.listener, heard_atom::value, stt_transcript{id, final_text, true, "en", start, s.seconds});
      },
      [=](stop_atom) {
        auto& s = self->state;
        if (s.opts.drain.count() > 0 && (s.n > 0 || s.opts.drain_without_audio)) {  // "stopped" only after the delay
          s.drain_end = std::chrono::steady_clock::now() + s.opts.drain;
          self->delayed_send(self, s.opts.drain, stop_atom::value);
          s.opts.drain = std::chrono::milliseconds(0);
          return;
        }
        // a stop again while draining (as real relays, it changes nothing); the delayed one ends it
        if (std::chrono::steady_clock::now() < s.drain_end) return;
        self->send(self->state.listener, status_atom::value, stt_status{"stopped", "echo"});
        self->quit();
      },
  };
}

}  // namespace

stt_provider echo_provider(echo_options opts) {
  stt_provider p;
  p.name = "echo";
  p.spawn = [opts](caf::actor_system& sys, const stream_identity&, stt_listener_actor listener) -> stt_relay_actor {
    return sys.spawn(echo_relay, listener, opts);
  };
  return p;
}

}  // namespace sw::test
