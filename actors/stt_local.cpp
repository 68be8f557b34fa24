#include "actors/stt_local.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <unordered_set>

#include <pocketsphinx.h>
#include <sphinxbase/cmn.h>
#include <sphinxbase/err.h>
#include <sphinxbase/feat.h>
#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace sw {

namespace {

// A decoder: created on demand (~0.3 s, ~46 MiB: acoustic model, dictionary, search), reused by later streams.
struct decoder {
  ps_decoder_t* ps = nullptr;
  std::size_t group = 0;
  std::shared_ptr<const std::vector<mfcc_t>> cmn;  // the cepstral mean it started with (the model's -cmninit)
};

// Makes a decoder that served other streams start like a new one: the audio front end's noise and the cepstral
// mean adapt to each speaker, and one stream's must not shape the next stream's words. Call with the turn held.
void start_fresh(const decoder& d) {
  ps_start_stream(d.ps);
  auto* feat = ps_get_feat(d.ps);
  if (feat && feat->cmn_struct && d.cmn && d.cmn->size() == static_cast<std::size_t>(feat->cmn_struct->veclen))
    cmn_live_set(feat->cmn_struct, d.cmn->data());
}

// Decoders up to LOCAL_STT_MAX_STREAMS, in LOCAL_STT_THREADS groups (default: one per core). The decoders of a
// group share one language model (33 MiB, loaded once per group) and take turns on it under the group's mutex:
// sphinxbase's trie LM keeps lookup caches inside the model, so it may never be used by two threads at once. One
// group per core keeps every core busy and no more threads decoding than there are cores.
// Every decoder gets the same dictionary, cut once to the words the language model knows (79 000 of CMUdict's
// 135 000 entries): the search can only ever produce those, and each decoder is 12 MiB smaller for it.
class decoder_pool {
public:
  decoder_pool(local_model_paths paths, std::size_t max, std::size_t threads)
      : paths_(std::move(paths)), max_(max), groups_(std::max<std::size_t>(1, std::min(max, threads))) {}
  ~decoder_pool() {
    for (auto& d : free_) ps_free(d.ps);
    for (auto& g : groups_)
      if (g.lm) ngram_model_free(g.lm);
    for (auto* c : configs_) cmd_ln_free_r(c);
    if (lmath_) logmath_free(lmath_);
    if (dict_fd_ >= 0) close(dict_fd_);
  }

  // A decoder for one stream (ps == nullptr when `max` streams already hold one, or the model cannot load).
  decoder lease(std::string& error) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!free_.empty()) {  // reuse the one whose group has the least work
      auto it = std::min_element(free_.begin(), free_.end(),
                                 [&](auto& a, auto& b) { return groups_[a.group].active < groups_[b.group].active; });
      auto d = *it;
      free_.erase(it);
      ++leased_;
      ++groups_[d.group].active;
      return d;
    }
    if (leased_ >= max_) return {};
    if (!lmath_ && !prepare(error)) return {};
    decoder d;
    d.group = static_cast<std::size_t>(
        std::min_element(groups_.begin(), groups_.end(), [](auto& a, auto& b) { return a.decoders < b.decoders; }) -
        groups_.begin());
    auto& g = groups_[d.group];
    cmd_ln_t* cfg = cmd_ln_init(nullptr, ps_args(), TRUE, "-hmm", paths_.hmm.c_str(), "-dict", dict_path_.c_str(),
                                "-logfn", "/dev/null", nullptr);
    d.ps = cfg ? ps_init(cfg) : nullptr;
    if (auto* feat = d.ps ? ps_get_feat(d.ps) : nullptr; feat && feat->cmn_struct)
      d.cmn = std::make_shared<const std::vector<mfcc_t>>(feat->cmn_struct->cmn_mean,
                                                          feat->cmn_struct->cmn_mean + feat->cmn_struct->veclen);
    if (d.ps && !g.lm) g.lm = ngram_model_read(cfg, paths_.lm.c_str(), NGRAM_AUTO, lmath_);
    std::unique_lock<std::mutex> turn(g.turn);  // building a search writes the LM's weights: not while in use
    if (!d.ps || !g.lm || ps_set_lm(d.ps, "lm", g.lm) != 0 || ps_set_search(d.ps, "lm") != 0) {
      if (d.ps) ps_free(d.ps);
      if (cfg) cmd_ln_free_r(cfg);
      error = "cannot load the PocketSphinx model from " + paths_.hmm;
      return {};
    }
    configs_.push_back(cfg);
    ++leased_;
    ++g.decoders;
    ++g.active;
    return d;
  }

  void give_back(decoder d) {
    std::lock_guard<std::mutex> lock(mu_);
    --leased_;
    --groups_[d.group].active;
    free_.push_back(d);
  }

  // Held around every call into a decoder of `group`.
  std::mutex& turn(std::size_t group) { return groups_[group].turn; }

private:
  // Once, before the first decoder: the first group's language model and the dictionary cut to its words.
  bool prepare(std::string& error) {
    error = "cannot load the PocketSphinx language model from " + paths_.lm;
    err_set_logfp(nullptr);  // as every decoder's "-logfn /dev/null" does: the library's chatter is not our log
    cmd_ln_t* defaults = cmd_ln_init(nullptr, ps_args(), TRUE, "-logfn", "/dev/null", nullptr);
    if (!defaults) return false;
    configs_.push_back(defaults);
    // The decoders' own log base (-logbase), so that the models' scores mean the same to every decoder.
    auto* lmath = logmath_init(cmd_ln_float32_r(defaults, "-logbase"), 0, TRUE);
    auto* lm = lmath ? ngram_model_read(defaults, paths_.lm.c_str(), NGRAM_AUTO, lmath) : nullptr;
    if (!lm) {
      if (lmath) logmath_free(lmath);
      return false;
    }
    lmath_ = lmath;
    groups_[0].lm = lm;
    error.clear();
    dict_path_ = paths_.dict;  // the whole dictionary, unless it can be cut
    std::unordered_set<std::string> words;
    const auto n = ngram_model_get_counts(lm)[0];
    for (std::uint32_t i = 0; i < n; ++i) words.insert(ngram_word(lm, static_cast<int32>(i)));
    std::ifstream in(paths_.dict);
    std::string kept, line;
    while (std::getline(in, line)) {
      auto word = line.substr(0, line.find_first_of(" \t"));
      auto p = word.rfind('(');  // "word(2)": the second pronunciation of "word"
      if (p != std::string::npos && p > 0 && word.size() > p + 2 && word.back() == ')' &&
          word.find_first_not_of("0123456789", p + 1) == word.size() - 1)
        word.resize(p);
      if (words.count(word)) kept += line + "\n";
    }
    if (kept.empty()) return true;
    // In memory, named by /proc: nothing to clean up on disk, whatever way the process ends.
    int fd = memfd_create("sessions-ws-dict", MFD_CLOEXEC);
    if (fd < 0) return true;
    std::size_t done = 0;
    while (done < kept.size()) {
      auto w = write(fd, kept.data() + done, kept.size() - done);
      if (w <= 0) {
        close(fd);
        return true;
      }
      done += static_cast<std::size_t>(w);
    }
    dict_fd_ = fd;
    dict_path_ = "/proc/self/fd/" + std::to_string(fd);
    return true;
  }

  struct group {
    std::mutex turn;
    ngram_model_t* lm = nullptr;
    std::size_t decoders = 0;
    std::size_t active = 0;
  };
  local_model_paths paths_;
  std::size_t max_;
  std::mutex mu_;
  std::size_t leased_ = 0;
  std::vector<group> groups_;
  std::vector<decoder> free_;
  std::vector<cmd_ln_t*> configs_;
  logmath_t* lmath_ = nullptr;  // shared by every group's language model
  int dict_fd_ = -1;
  std::string dict_path_;
};

struct local_state {
  static inline const char* name = "local_relay";
  context_ptr ctx;
  std::shared_ptr<decoder_pool> pool;
  decoder dec;  // every call into dec.ps holds turn()
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
    if (dec.ps && pool) pool->give_back(dec);
  }
  // The decoder's group is this stream's to use until the lock goes.
  std::unique_lock<std::mutex> turn() { return std::unique_lock<std::mutex>(pool->turn(dec.group)); }
};

using self_ptr = stt_relay_actor::stateful_pointer<local_state>;
constexpr std::uint64_t rate = 16000;

// The decoder's current hypothesis (copied: the decoder owns the buffer). Call with the group's turn held.
std::string hypothesis(ps_decoder_t* ps) {
  int32 score = 0;
  const char* hyp = ps_get_hyp(ps, &score);
  return hyp ? hyp : "";
}

void emit(self_ptr self, bool final, std::string text) {
  auto& st = self->state;
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
  self->send(st.listener, heard_atom::value, std::move(t));
}

// Closes the current utterance: its final (if anything was recognised), then a fresh utterance.
void end_utterance(self_ptr self, bool restart) {
  auto& st = self->state;
  auto turn = st.turn();
  ps_end_utt(st.dec.ps);
  auto hyp = hypothesis(st.dec.ps);
  if (restart) ps_start_utt(st.dec.ps);
  turn.unlock();
  emit(self, true, std::move(hyp));
  ++st.utterance;
  st.in_speech = false;
  st.last_partial.clear();
}

stt_relay_actor::behavior_type local_relay(self_ptr self, context_ptr ctx, std::shared_ptr<decoder_pool> pool,
                                           stt_listener_actor listener) {
  auto& st = self->state;
  st.ctx = ctx;
  st.pool = pool;
  st.listener = listener;
  st.probe = actor_probe(ctx->metrics, "local_relay");
  std::string error;
  st.dec = pool->lease(error);
  if (!st.dec.ps) {
    self->send(listener, error_atom::value,
               error.empty() ? stt_error{"stt_busy", "every local recognizer is in use; try again later"}
                             : stt_error{"stt_unavailable", error});
    self->send(listener, status_atom::value, stt_status{"stopped", "local"});
    self->quit();
    return {[](audio_atom, audio_chunk&) {}, [](stop_atom) {}};
  }
  {
    auto turn = st.turn();
    start_fresh(st.dec);
    ps_start_utt(st.dec.ps);
  }
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
        auto turn = s.turn();
        ps_process_raw(s.dec.ps, reinterpret_cast<const int16*>(chunk.pcm.data()), n, FALSE, FALSE);
        s.samples += n;
        bool speech = ps_get_in_speech(s.dec.ps) != 0;
        turn.unlock();
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
          turn.lock();
          auto hyp = hypothesis(s.dec.ps);
          turn.unlock();
          emit(self, false, std::move(hyp));
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
  auto pool = std::make_shared<decoder_pool>(paths, ctx->cfg.local_stt_max_streams, ctx->cfg.local_stt_threads);
  return make_provider(
      "local", ctx, [pool](caf::actor_system& sys, context_ptr c, const stream_identity&, stt_listener_actor listener) {
        return sys.spawn<caf::detached>(local_relay, c, pool, listener);
      });
}

}  // namespace sw
