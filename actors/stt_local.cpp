#include "actors/stt_local.hpp"

#include <deque>
#include <filesystem>
#include <mutex>

#include <pocketsphinx.h>
#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace sw {

namespace {

// Decoders are expensive (model load ~0.3 s, tens of MB): created on demand up to the limit, then reused.
class decoder_pool {
public:
  decoder_pool(local_model_paths paths, std::size_t max) : paths_(std::move(paths)), max_(max) {}
  ~decoder_pool() {
    for (auto* d : free_) ps_free(d);
    for (auto* c : configs_) cmd_ln_free_r(c);
  }

  // A decoder for one stream, or nullptr when `max` streams already hold one.
  ps_decoder_t* lease(std::string& error) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {
      auto* d = free_.back();
      free_.pop_back();
      ++leased_;
      return d;
    }
    if (leased_ >= max_) return nullptr;
    cmd_ln_t* cfg = cmd_ln_init(nullptr, ps_args(), TRUE, "-hmm", paths_.hmm.c_str(), "-lm", paths_.lm.c_str(), "-dict",
                                paths_.dict.c_str(), "-logfn", "/dev/null", nullptr);
    ps_decoder_t* d = cfg ? ps_init(cfg) : nullptr;
    if (!d) {
      if (cfg) cmd_ln_free_r(cfg);
      error = "cannot load the PocketSphinx model from " + paths_.hmm;
      return nullptr;
    }
    configs_.push_back(cfg);
    ++leased_;
    return d;
  }

  void give_back(ps_decoder_t* d) {
    std::lock_guard<std::mutex> lock(mu_);
    --leased_;
    free_.push_back(d);
  }

private:
  local_model_paths paths_;
  std::size_t max_;
  std::mutex mu_;
  std::size_t leased_ = 0;
  std::vector<ps_decoder_t*> free_;
  std::vector<cmd_ln_t*> configs_;
};

struct local_state {
  static inline const char* name = "local_relay";
  context_ptr ctx;
  std::shared_ptr<decoder_pool> pool;
  ps_decoder_t* ps = nullptr;
  stt_listener_actor listener;
  std::uint64_t samples = 0;    // audio processed so far
  std::uint64_t utt_start = 0;  // sample where the current utterance began
  bool in_speech = false;
  int utterance = 0;
  std::uint64_t last_partial_samples = 0;
  std::string last_partial;
  bool done = false;
  actor_probe probe;
  ~local_state() {
    if (ps && pool) pool->give_back(ps);
  }
};

using self_ptr = stt_relay_actor::stateful_pointer<local_state>;
constexpr std::uint64_t rate = 16000;

void emit(self_ptr self, bool final, const char* hyp) {
  auto& st = self->state;
  std::string text = hyp ? hyp : "";
  if (text.empty()) return;
  if (!final && text == st.last_partial) return;
  st.last_partial = final ? std::string{} : text;
  stt_transcript t;
  t.utterance_id = "u" + std::to_string(st.utterance);
  t.text = std::move(text);
  t.is_final = final;
  t.language = "en";
  t.start = static_cast<double>(st.utt_start) / rate;
  t.end = static_cast<double>(st.samples) / rate;
  self->send(st.listener, transcript_atom::value, std::move(t));
}

// Closes the current utterance: its final (if anything was recognised), then a fresh utterance.
void end_utterance(self_ptr self, bool restart) {
  auto& st = self->state;
  ps_end_utt(st.ps);
  int32 score = 0;
  emit(self, true, ps_get_hyp(st.ps, &score));
  ++st.utterance;
  st.in_speech = false;
  st.last_partial.clear();
  if (restart) ps_start_utt(st.ps);
}

stt_relay_actor::behavior_type local_relay(self_ptr self, context_ptr ctx, std::shared_ptr<decoder_pool> pool,
                                           stt_listener_actor listener) {
  auto& st = self->state;
  st.ctx = ctx;
  st.pool = pool;
  st.listener = listener;
  st.probe = actor_probe(ctx->metrics, "local_relay");
  std::string error;
  st.ps = pool->lease(error);
  if (!st.ps) {
    self->send(listener, error_atom::value,
               error.empty() ? stt_error{"stt_busy", "every local recognizer is in use; try again later"}
                             : stt_error{"stt_unavailable", error});
    self->send(listener, status_atom::value, stt_status{"stopped", "local"});
    self->quit();
    return {[](audio_atom, audio_chunk&) {}, [](stop_atom) {}};
  }
  ps_start_utt(st.ps);
  self->monitor(listener);
  self->set_down_handler([self](caf::down_msg&) { self->quit(); });
  self->send(listener, status_atom::value, stt_status{"ready", "local"});
  using scope = probe_scope<std::remove_pointer_t<self_ptr>>;
  return {
      [self](audio_atom, audio_chunk& chunk) {
        scope t(self->state.probe, self);
        auto& s = self->state;
        if (s.done) return;
        auto n = chunk.pcm.size() / 2;
        ps_process_raw(s.ps, reinterpret_cast<const int16*>(chunk.pcm.data()), n, FALSE, FALSE);
        s.samples += n;
        bool speech = ps_get_in_speech(s.ps) != 0;
        if (speech && !s.in_speech) {
          s.in_speech = true;
          s.utt_start = s.samples > rate / 10 ? s.samples - rate / 10 : 0;
        }
        if (s.in_speech && !speech) {
          end_utterance(self, true);  // silence after speech: the utterance is final
          return;
        }
        if (s.in_speech && s.samples - s.last_partial_samples >= rate * 3 / 10) {  // at most every 300 ms
          s.last_partial_samples = s.samples;
          int32 score = 0;
          emit(self, false, ps_get_hyp(s.ps, &score));
        }
      },
      [self](stop_atom) {
        scope t(self->state.probe, self);
        auto& s = self->state;
        if (s.done) return;
        s.done = true;
        end_utterance(self, false);  // the last utterance is delivered before "stopped"
        self->send(s.listener, status_atom::value, stt_status{"stopped", "local"});
        self->quit();
      },
  };
}

}  // namespace

bool local_model_paths::available() const {
  return std::filesystem::exists(hmm) && std::filesystem::exists(lm) && std::filesystem::exists(dict);
}

stt_provider local_provider(context_ptr ctx, local_model_paths paths) {
  auto pool = std::make_shared<decoder_pool>(paths, ctx->cfg.local_stt_max_streams);
  return make_provider("local", ctx, [pool](caf::actor_system& sys, context_ptr c, stt_listener_actor listener) {
    return sys.spawn<caf::detached>(local_relay, c, pool, listener);
  });
}

}  // namespace sw
