#include "actors/session.hpp"

#include <algorithm>
#include <cstring>

#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/egress.hpp"
#include "proto/json.hpp"

namespace sw {

namespace {

using self_ptr = session_actor::stateful_pointer<session_state>;

void send_json(session_state& st, std::string json, delivery how = delivery::required) {
  if (st.egress) return;  // an egress reads nothing
  if (st.sink && !st.close_sent) st.sink->send(std::make_shared<const std::string>(std::move(json)), how);
}

void send_status(session_state& st, const std::string& status) {
  if (st.stt_state == status) return;
  st.stt_state = status;
  send_json(st, json_builder()
                    .str("type", "stt_status")
                    .str("status", status)
                    .str("sessionSlug", st.who.session_slug)
                    .str("provider", st.provider)
                    .num("timestamp", now_ms())
                    .done());
}

// "<stream id> room=<slug>" for log lines (never the token, never audio).
std::string stream_label(const session_state& st) {
  return std::to_string(st.who.stream_id) + " room=" + st.who.session_slug;
}

// Wall clock (ms) of a moment of the room mix's audio, `s` seconds from its start.
std::int64_t wall_ms(const session_state& st, double s) {
  const auto at = static_cast<std::int64_t>(s * 1000);
  if (st.anchors.empty()) return st.started_ms + at;
  auto it =
      std::upper_bound(st.anchors.begin(), st.anchors.end(), at,
                       [](std::int64_t t, const std::pair<std::int64_t, std::int64_t>& a) { return t < a.first; });
  const auto& a = it == st.anchors.begin() ? *it : *std::prev(it);
  return a.second + (at - a.first);
}

bool relay_running(const session_state& st) {
  return st.relay && !st.relay_done;
}

// Ends the actor once the socket is closed (or closing) and the upstream has delivered everything.
void maybe_finish(self_ptr self) {
  auto& st = self->state;
  if (relay_running(st) || st.finishing) return;
  // An egress stream whose transcription failed for good (Gladia gone for longer than its reconnects, the relay
  // died): closed 1013, and its egress actor has LiveKit start another one, with a new upstream, at the next
  // reconciliation. A browser keeps hearing the room instead (it was told). Not for a refused key: another would be
  // refused too.
  if (st.egress && !st.socket_gone && !st.close_sent && !st.stop_requested && !st.shutting_down &&
      !st.stt_failure.empty() && st.stt_failure != "stt_auth_failed") {
    SW_LOG(st.ctx, warn,
           "stream " << stream_label(st) << ": speech-to-text failed for good (" << st.stt_failure
                     << "): egress stream closed 1013, for its egress to be replaced");
    if (st.sink) st.sink->close(1013, "Speech-to-text unavailable");
    st.close_sent = true;
    st.fault = true;
  }
  if (!st.socket_gone && !st.close_sent) {
    if (!st.stop_requested && !st.shutting_down) return;  // keep listening to the room
    if (st.sink) st.sink->close(st.shutting_down ? 1001 : 1000, st.shutting_down ? "Server shutting down" : "");
    st.close_sent = true;
  }
  st.finishing = true;
  if (st.room) self->send(st.room, leave_atom::value, st.who.stream_id);
  if (st.ctx->persistence && st.opened) {
    st.usage.ended_ms = now_ms();
    self->send(st.ctx->persistence, usage_atom::value, st.usage);
  }
  // Closed by net/ (heartbeat, slow reader, frame flood, protocol error) or broken: neither the client's close nor one
  // this actor asked for.
  const bool broken = st.socket_gone && !st.peer_closed && !st.close_sent && !st.shutting_down;
  if (st.fault || broken) {
    self->quit(stream_fault());
  } else {
    self->quit();
  }
}

// The last finals travel through the room: report "stopped" (and maybe close) only once the room has
// handed every earlier transcript of this stream to the clients.
void finish_after_room(self_ptr self) {
  auto done = [self] {
    send_status(self->state, "stopped");
    maybe_finish(self);
  };
  self->request(self->state.room, caf::infinite, sync_atom::value)
      .then([done](bool) { done(); }, [done](caf::error&) { done(); });
}

// Hands the batched audio to the relay; `flush`: and the relay sends what waits in its partial chunk.
void flush_audio(self_ptr self, bool flush = false) {
  auto& st = self->state;
  if (st.batch.pcm.empty() && !flush) return;
  st.batch.flush = flush;
  if (relay_running(st)) self->send(st.relay, audio_atom::value, std::move(st.batch));
  st.batch.pcm.clear();
  st.batch.flush = false;
  st.batch.read_ns = 0;
  if (flush) st.since_flush = 0;
}

void stop_relay(self_ptr self);

// A refused input: counted and logged (throttled by metrics), and told to the client at most once a second per kind.
void refuse(session_state& s, const char* counter, const std::string& what, std::int64_t& last_warning_ms,
            const char* code, const std::string& warning) {
  s.ctx->metrics->note(counter, "stream " + stream_label(s) + ": " + what);
  const auto ms = now_ms();
  if (ms - last_warning_ms < 1000) return;
  last_warning_ms = ms;
  send_json(s, json_warning(code, warning));
}

// A client that keeps flooding: closed 1008 once what was queued for it is out; its upstream drains and its finals
// are stored, as after a client's close.
void close_flooding(self_ptr self, const char* counter, const std::string& what) {
  auto& s = self->state;
  if (s.close_sent) return;
  s.ctx->metrics->note(counter, "stream " + stream_label(s) + ": " + what + ", closed 1008");
  if (s.sink) s.sink->close(1008, "Too many messages");
  s.close_sent = true;
  s.fault = true;
  s.stop_requested = true;  // what the client sends until the socket closes is not taken
  stop_relay(self);
}

// Shed by the gateway because the server cannot keep up: closed 1013 once what was queued for it is out; nothing more
// of it goes upstream, its upstream drains and its finals are stored, as after a client's close.
void close_overloaded(self_ptr self) {
  auto& s = self->state;
  if (s.close_sent || s.socket_gone) return;
  SW_LOG(s.ctx, info, "stream " << stream_label(s) << " shed: the server is behind, closed 1013");
  if (s.sink) s.sink->close(1013, "Server overloaded");
  s.close_sent = true;
  s.fault = true;
  s.stop_requested = true;
  stop_relay(self);
}

// One text message from the client: within the rate limit, or dropped, or, for a client that keeps flooding, the end
// of its connection (1008; the upstream drains as after a close).
bool accept_text(self_ptr self) {
  auto& s = self->state;
  if (!s.texts || s.close_sent) return false;
  switch (s.texts->check(text_guard::clock::now())) {
    case text_verdict::accept:
      return true;
    case text_verdict::dropped: {
      const auto limit = std::to_string(static_cast<int>(text_guard::refill_per_second));
      refuse(s, "ws.rate_limited_texts", "text messages faster than " + limit + " a second, dropped",
             s.last_text_warning_ms, "rate_limited",
             "text messages arrive faster than " + limit + " a second; dropped");
      return false;
    }
    case text_verdict::flood:
      close_flooding(self, "ws.text_floods",
                     std::to_string(text_guard::flood_drops) + " text messages dropped within a second");
      return false;
  }
  return false;
}

// One client frame of `size` bytes: valid and within the rate limit (counted), or refused.
bool accept_frame(self_ptr self, std::size_t size) {
  auto& s = self->state;
  switch (s.guard->check(size, audio_guard::clock::now())) {
    case frame_verdict::invalid:
      refuse(s, "audio.invalid_frames", "invalid audio frame of " + std::to_string(size) + " bytes",
             s.last_invalid_warning_ms, "invalid_audio_frame",
             "audio frames must be PCM16 LE 16 kHz mono: an even size from 2 to 65536 bytes");
      return false;
    case frame_verdict::rate_limited:
      refuse(s, "audio.rate_limited_frames", "audio faster than 2x real time, frames dropped", s.last_rate_warning_ms,
             "rate_limited", "audio arrives faster than 2x real time; frames dropped");
      return false;
    case frame_verdict::too_many_frames: {
      const auto limit = std::to_string(s.ctx->cfg.audio_max_frames_per_second);
      refuse(s, "audio.rate_limited_frames", "more than " + limit + " audio frames a second, frames dropped",
             s.last_rate_warning_ms, "rate_limited", "more than " + limit + " audio frames a second; frames dropped");
      return false;
    }
    case frame_verdict::flood:
      close_flooding(self, "audio.frame_floods", "4 s of audio frames dropped for their number within a second");
      return false;
    case frame_verdict::accept:
      break;
  }
  ++s.ctx->metrics->messages_received;
  ++s.usage.audio_chunks;
  return true;
}

// Accepted audio on its way to the relay: at once, or batched to the provider's chunk size.
void hand_over(self_ptr self, audio_chunk chunk) {
  auto& s = self->state;
  if (!relay_running(s)) return;
  const auto batch = s.ctx->stt.batch_bytes;
  if (batch == 0) {
    self->send(s.relay, audio_atom::value, std::move(chunk));
    return;
  }
  const auto before = s.since_flush;
  s.since_flush += chunk.pcm.size();
  s.batch.read_ns = chunk.read_ns;  // the batch's newest audio
  if (s.batch.pcm.empty()) {
    s.batch.pcm = std::move(chunk.pcm);  // net/ batches to the chunk size already: usually no copy at all
  } else {
    s.batch.pcm.insert(s.batch.pcm.end(), chunk.pcm.begin(), chunk.pcm.end());
  }
  if (s.since_flush / batch > before / batch) flush_audio(self);
}

// Asks the relay to drain (stop) once; finishing waits for its "stopped".
void stop_relay(self_ptr self) {
  auto& st = self->state;
  if (st.egress && st.egress->ok()) {  // what the resampler still holds is the end of the stream
    audio_chunk tail;
    tail.pcm = st.egress->drain();
    if (!tail.pcm.empty()) hand_over(self, std::move(tail));
  }
  flush_audio(self);
  if (relay_running(st)) self->send(st.relay, stop_atom::value);
  maybe_finish(self);
}

// The end of the stream's audio (the client's {"type":"stop"}, or the egress actor's stop): the upstream drains, then
// close 1000. Not yet open: the open handler stops at once.
void request_stop(self_ptr self) {
  auto& st = self->state;
  if (st.stop_requested) return;
  st.stop_requested = true;
  if (st.opened) stop_relay(self);
}

void start_relay(self_ptr self) {
  auto& st = self->state;
  st.provider = st.ctx->stt.name.empty() ? "none" : st.ctx->stt.name;
  if (st.ctx->stt.spawn) st.relay = st.ctx->stt.spawn(self->system(), st.who, stt_listener_actor{self});
  if (!st.relay) {
    send_status(st, "stopped");
    send_json(st, json_error_message("stt_unavailable", "no speech-to-text provider is available for this stream"));
    ++st.usage.errors;
    return;
  }
  ++st.ctx->metrics->active_relays;
  self->monitor(st.relay);
  send_status(st, "connecting");
}

}  // namespace

session_actor::behavior_type session(self_ptr self, context_ptr ctx, stream_identity who, bool legacy, room_actor room,
                                     gateway_actor gateway) {
  auto& st = self->state;
  st.ctx = ctx;
  st.who = std::move(who);
  st.legacy = legacy;
  st.room = std::move(room);
  st.gateway = std::move(gateway);
  if (!st.who.track_id.empty()) st.egress = std::make_unique<egress_audio>();
  st.room_mix = st.who.track_id == room_mix_track;
  st.started_ms = now_ms();
  st.probe = actor_probe(ctx->metrics, "session");
  st.usage.session_slug = st.who.session_slug;
  st.usage.session_id = st.who.session_id;
  st.usage.identity = st.who.identity;
  st.usage.started_ms = st.started_ms;
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& s = self->state;
    if (dm.source == s.relay.address() && relay_running(s)) {
      // The relay died without reporting "stopped": the stream has no upstream any more.
      --s.ctx->metrics->active_relays;
      s.ctx->metrics->error("stt.relay_ended",
                            "stt relay ended unexpectedly: stream " + stream_label(s) + ": " + to_string(dm.reason));
      send_json(s, json_error_message("internal", "speech-to-text relay failed"));
      s.stt_failure = "internal";
      s.relay_done = true;
      finish_after_room(self);
    }
  });
  using scope = probe_scope<std::remove_pointer_t<self_ptr>>;
  return {
      // --- from the STT relay ---
      [=](heard_atom, stt_transcript& t) {
        scope probe(self->state.probe, self);
        auto& s = self->state;
        ++s.usage.transcripts;
        ++(t.is_final ? s.usage.finals : s.usage.partials);
        auto deliver = [self](room_transcript& rt) {
          auto& s2 = self->state;
          if (rt.is_final && s2.ctx->persistence)
            self->send(s2.ctx->persistence, final_atom::value, final_record{rt, s2.who.session_id, s2.started_ms});
          self->send(s2.room, transcript_atom::value, std::move(rt));
        };
        room_transcript rt;
        rt.session_slug = s.who.session_slug;
        rt.utterance_id = s.who.stream_key + "-" + t.utterance_id;
        rt.text = std::move(t.text);
        rt.is_final = t.is_final;
        rt.speaker_id = s.who.identity;
        rt.speaker_name = s.who.name;
        rt.language = std::move(t.language);
        rt.start = t.start;
        rt.end = t.end;
        if (!s.room_mix) {
          deliver(rt);
          return;
        }
        // The room's mix: whoever held the floor longest during the utterance. Awaited, so that transcripts keep
        // their order.
        speech_span span{wall_ms(s, t.start), wall_ms(s, t.end)};
        self->request(s.room, std::chrono::seconds(2), speaker_atom::value, span)
            .await(
                [deliver, rt](const active_speaker_update& who) mutable {
                  rt.speaker_id = who.identity;
                  rt.speaker_name = who.name.empty() ? who.identity : who.name;
                  deliver(rt);
                },
                [deliver, rt](caf::error&) mutable { deliver(rt); });
      },
      [=](status_atom, stt_status& status) {
        scope probe(self->state.probe, self);
        auto& s = self->state;
        if (!status.provider.empty()) s.provider = status.provider;
        if (status.status != "stopped") {
          send_status(s, status.status);
          return;
        }
        if (!relay_running(s)) return;
        s.relay_done = true;
        --s.ctx->metrics->active_relays;
        finish_after_room(self);
      },
      [=](error_atom, stt_error& e) {
        scope probe(self->state.probe, self);
        auto& s = self->state;
        ++s.usage.errors;
        s.stt_failure = e.code;  // a "stopped" follows
        s.ctx->metrics->error("stt." + e.code, "stt: " + e.code + ": stream " + stream_label(s) + ": " + e.message);
        send_json(s, json_error_message(e.code, e.message));
      },
      // --- from net/ ---
      [=](open_atom, client_sink_ptr& sink) {
        scope probe(self->state.probe, self);
        auto& s = self->state;
        s.sink = std::move(sink);
        s.opened = true;
        s.guard.emplace(audio_guard::clock::now(), s.ctx->cfg.audio_max_frames_per_second);
        s.texts.emplace(text_guard::clock::now());
        send_json(s, json_builder()
                         .str("type", "connected")
                         .str("sessionSlug", s.who.session_slug)
                         .str("userId", s.who.user_id)
                         .str("identity", s.who.identity)
                         .str("message", "WebSocket connection established")
                         .num("ts", now_ms())
                         .done());
        if (!s.egress) self->send(s.room, join_atom::value, room_member{s.who.stream_id, s.sink, s.legacy});
        start_relay(self);
        SW_LOG(s.ctx, debug,
               "stream " << s.who.stream_id << " open: room=" << s.who.session_slug << " identity=" << s.who.identity);
        if (s.shed) {
          close_overloaded(self);
        } else if (s.shutting_down || s.stop_requested) {
          stop_relay(self);
        }
      },
      [=](audio_atom, audio_chunk& chunk) {
        scope probe(self->state.probe, self);
        auto& s = self->state;
        if (!s.guard || s.stop_requested || s.shutting_down) return;
        if (s.egress) {
          if (s.muted) return;  // a muted track: nothing goes upstream, nothing is billed
          chunk.pcm = s.egress->convert(chunk.pcm.data(), chunk.pcm.size());
          if (chunk.pcm.empty()) return;  // held by the resampler for now
          if (s.room_mix) {
            if (s.anchor_next) {
              s.anchors.emplace_back(static_cast<std::int64_t>(s.mono_bytes / 32), now_ms());
              if (s.anchors.size() > 256) s.anchors.pop_front();
              s.anchor_next = false;
            }
            s.mono_bytes += chunk.pcm.size();
          }
        }
        if (chunk.frames.empty()) {
          if (!accept_frame(self, chunk.pcm.size())) return;
        } else {  // the client's frames of about one upstream chunk: each is judged on its own
          std::size_t kept = 0, at = 0;
          for (auto size : chunk.frames) {
            if (accept_frame(self, size)) {
              if (kept != at) std::memmove(chunk.pcm.data() + kept, chunk.pcm.data() + at, size);
              kept += size;
            } else if (s.stop_requested) {
              return;  // closed for flooding: nothing more of it goes upstream
            }
            at += size;
          }
          if (kept == 0) return;
          chunk.pcm.resize(kept);
          chunk.frames.clear();
        }
        hand_over(self, std::move(chunk));
      },
      [=](quiet_atom) {
        // The client's audio paused: what waits in a partial chunk (here or in the relay) goes now, and the relay
        // hears of the pause even when nothing waits (with audio outstanding, it looks for an unseen end of its
        // upstream connection a second later).
        scope probe(self->state.probe, self);
        auto& s = self->state;
        if (relay_running(s) && s.ctx->stt.batch_bytes > 0) flush_audio(self, true);
      },
      [=](text_atom, const std::string& text) {
        scope probe(self->state.probe, self);
        auto& s = self->state;
        if (s.egress) {  // {"muted":bool} on track mute / unmute; nothing else is expected
          if (auto muted = parse_egress_muted(text)) {
            if (*muted && !s.muted) s.anchor_next = true;  // the audio after the unmute starts a new anchor
            s.muted = *muted;
          }
          return;
        }
        if (!accept_text(self)) return;
        auto m = parse_client_message(text);
        if (!m.valid_json) {
          send_json(s, json_warning("invalid_json", "text frames must be JSON objects"));
        } else if (m.type == "ping") {
          send_json(s, json_builder().str("type", "pong").num("ts", now_ms()).done());
        } else if (m.type == "stop") {
          request_stop(self);
        } else if (m.type == "active_speaker") {
          active_speaker_update u;
          u.identity = m.identity.empty() ? s.who.identity : m.identity;
          u.name = m.name.empty() && u.identity == s.who.identity ? s.who.name : m.name;
          u.timestamp_ms = m.timestamp ? m.timestamp : now_ms();
          self->send(s.room, speaker_atom::value, std::move(u));
        } else {
          send_json(s, json_warning("unknown_message", "unknown message type: " + m.type));
        }
      },
      [=](closed_atom, bool by_peer) {
        scope probe(self->state.probe, self);
        auto& s = self->state;
        s.socket_gone = true;
        s.peer_closed = by_peer;
        s.sink.reset();
        if (s.room) self->send(s.room, leave_atom::value, s.who.stream_id);
        stop_relay(self);  // finals still reach the room and the database
        // Still draining the upstream: the user may reconnect at once without this stream counting against it.
        if (relay_running(s) && s.gateway) self->send(s.gateway, leave_atom::value);
      },
      [=](behind_atom, std::uint64_t unread) {
        scope probe(self->state.probe, self);
        auto& s = self->state;
        if (s.close_sent || s.socket_gone || s.shutting_down) return;
        // the client's bytes a millisecond of its audio: 16 kHz mono PCM16, or LiveKit's 48 kHz stereo
        const std::uint64_t per_ms = s.egress ? 192 : 32;
        self->send(s.gateway, behind_atom::value,
                   static_cast<std::uint32_t>(std::min<std::uint64_t>(unread / per_ms, UINT32_MAX)));
      },
      [=](shed_atom) {
        scope probe(self->state.probe, self);
        auto& s = self->state;
        if (s.opened) {
          close_overloaded(self);
        } else {
          s.shed = true;  // the open handler closes it
        }
      },
      [=](shutdown_atom) {
        scope probe(self->state.probe, self);
        auto& s = self->state;
        s.shutting_down = true;
        if (s.opened) stop_relay(self);
        // not yet open: the open handler stops at once
      },
      [=](stop_atom) {
        scope probe(self->state.probe, self);
        request_stop(self);
      },
  };
}

}  // namespace sw
