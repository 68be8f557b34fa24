#include "actors/room.hpp"

#include <algorithm>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "proto/json.hpp"

namespace sw {

room_actor::behavior_type room(room_actor::stateful_pointer<room_state> self, context_ptr ctx, std::string slug) {
  auto& st = self->state;
  st.ctx = ctx;
  st.slug = std::move(slug);
  st.probe = actor_probe(ctx->metrics, "room");
  using scope = probe_scope<std::remove_pointer_t<decltype(self)>>;
  return {
      [=](speaker_atom, active_speaker_update& u) {
        scope t(self->state.probe, self);
        self->state.speakers.add(std::move(u));
      },
      [=](speaker_atom) -> active_speaker_update {
        scope t(self->state.probe, self);
        auto latest = self->state.speakers.latest();
        return latest ? *latest : active_speaker_update{};
      },
      [=](speaker_atom, const speech_span& span) -> active_speaker_update {
        scope t(self->state.probe, self);
        if (auto who = self->state.speakers.attribute(span.from_ms, span.to_ms)) return *who;
        return active_speaker_update{"room", "Meeting", span.from_ms};
      },
      [=](join_atom, room_member& m) {
        scope t(self->state.probe, self);
        self->state.members.push_back(std::move(m));
      },
      [=](leave_atom, std::uint64_t stream_id) {
        scope t(self->state.probe, self);
        auto& ms = self->state.members;
        ms.erase(std::remove_if(ms.begin(), ms.end(), [&](const room_member& m) { return m.stream_id == stream_id; }),
                 ms.end());
      },
      [=](transcript_atom, room_transcript& tr) {
        scope t(self->state.probe, self);
        auto& s = self->state;
        if (tr.is_final) {
          if (!s.finals_seen.insert(tr.utterance_id).second) {
            s.ctx->metrics->count("ws.duplicate_final_transcripts_skipped");
            return;
          }
          s.finals_order.push_back(tr.utterance_id);
          if (s.finals_order.size() > room_dedup_window) {
            s.finals_seen.erase(s.finals_order.front());
            s.finals_order.pop_front();
          }
        }
        // Serialize once per framing; every client gets the same immutable buffer.
        auto ts = now_ms();
        shared_text modern, legacy;
        auto how = tr.is_final ? delivery::required : delivery::skippable;
        for (auto& m : s.members) {
          auto& text = m.legacy ? legacy : modern;
          if (!text) text = std::make_shared<const std::string>(json_transcript(tr, ts, m.legacy));
          m.sink->send(text, how);
        }
        s.ctx->metrics->messages_sent += s.members.size();
      },
      [=](sync_atom) { return true; },
      [=](notice_atom, const std::string& json) {
        scope t(self->state.probe, self);
        auto text = std::make_shared<const std::string>(json);
        for (auto& m : self->state.members) m.sink->send(text, delivery::required);
      },
  };
}

}  // namespace sw
