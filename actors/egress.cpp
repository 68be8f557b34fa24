#include "actors/egress.hpp"

#include <algorithm>
#include <set>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "proto/json.hpp"
#include "proto/token.hpp"

namespace sw {

namespace {

using self_ptr = egress_actor::stateful_pointer<egress_state>;

// How long LiveKit gets to close the streams of stopped egresses before they are drained from this side.
constexpr std::chrono::seconds close_grace{5};
// How long a egress token admits its stream: LiveKit dials at once after the start.
constexpr std::int64_t egress_token_ttl_s = 600;

void publish(self_ptr self) {
  auto& st = self->state;
  egress_room_view v;
  v.mode = st.room_mode ? "room" : "track";
  v.state = st.stopping ? "stopping" : "running";
  for (auto& [sid, t] : st.tracks) {
    if (!t.egress_id.empty()) ++v.egresses;
    if (t.starting) ++v.starting;
    v.streams += static_cast<std::uint32_t>(t.streams.size());
  }
  v.streams += static_cast<std::uint32_t>(st.orphan_streams.size());
  v.failures = st.failures;
  v.last_error = st.last_error;
  st.ctx->metrics->set_egress_room(st.slug, std::move(v));
}

// One Twirp call; `then` runs in this actor with the answer.
void call(self_ptr self, const char* service, const char* method, std::string body, livekit_grant grant,
          std::function<void(const livekit_answer&)> then) {
  auto& st = self->state;
  const auto id = st.next_call++;
  st.pending.emplace(id, std::move(then));
  st.ctx->metrics->count("livekit.calls");
  egress_actor me{self};
  st.ctx->livekit->call(service, method, body, grant, [me, id](net::livekit_reply r) {
    caf::anon_send(me, reply_atom::value, livekit_answer{id, r.ok, r.status, std::move(r.body), std::move(r.error)});
  });
}

// A LiveKit failure: logged, counted, shown in /metrics, and told to the room's clients.
void report(self_ptr self, const livekit_answer& a, const std::string& what) {
  auto& st = self->state;
  ++st.failures;
  // a.error is empty when LiveKit answered 200 with something this service cannot read
  st.last_error = a.error.empty()
                      ? "LiveKit answered HTTP " + std::to_string(a.status) + " with a body this service cannot read"
                      : a.error;
  st.ctx->metrics->count("livekit.errors");
  st.ctx->metrics->error("livekit.errors", "livekit: room=" + st.slug + ": " + what + ": " + st.last_error);
  const char* reason = a.status == 401 || a.status == 403 ? "livekit_unauthorized"
                       : a.status == 0                    ? "livekit_unreachable"
                                                          : "livekit_error";
  self->send(st.gateway, notice_atom::value, st.slug,
             json_builder()
                 .str("type", "transcription_error")
                 .str("reason", reason)
                 .str("message", "Room transcription: " + what + ": " + st.last_error)
                 .str("sessionSlug", st.slug)
                 .num("ts", now_ms())
                 .done());
  publish(self);
}

void finish_if_drained(self_ptr self);

// Ends the egress of `sid` at LiveKit (its stream then closes and drains), keeping the entry while it does.
void stop_egress(self_ptr self, const std::string& sid) {
  auto& st = self->state;
  auto it = st.tracks.find(sid);
  if (it == st.tracks.end() || it->second.egress_id.empty() || it->second.stop_sent) return;
  it->second.stop_sent = true;
  const auto egress_id = it->second.egress_id;
  call(self, "Egress", "StopEgress", livekit_stop_egress_body(egress_id), livekit_grant{true, false, {}},
       [self, egress_id](const livekit_answer& a) {
         // 404 / 412: it has ended already, which is what was asked.
         if (!a.ok && a.status != 404 && a.status != 412) report(self, a, "stopping egress " + egress_id);
         finish_if_drained(self);
       });
}

// The track is gone (unpublished, its participant left, its egress ended): stop its egress, forget it; its stream
// drains on its own. While its start is in flight, LiveKit may have started the egress already (its id comes with the
// answer): the track is kept, marked, until the answer, which ends it then.
void end_track(self_ptr self, const std::string& sid) {
  auto& st = self->state;
  auto it = st.tracks.find(sid);
  if (it == st.tracks.end()) return;
  if (it->second.starting) {
    it->second.gone = true;
    return;
  }
  stop_egress(self, sid);
  for (auto& s : it->second.streams) st.orphan_streams.push_back(s);
  st.tracks.erase(it);
  publish(self);
}

void start_track(self_ptr self, const std::string& sid, const std::string& identity, const std::string& name) {
  auto& st = self->state;
  auto& t = st.tracks[sid];
  if (t.starting || !t.egress_id.empty()) return;
  t.identity = identity;
  t.name = name.empty() ? identity : name;
  t.starting = true;
  t.stop_sent = false;
  const auto& cfg = st.ctx->cfg;
  token_claims claims{st.slug, t.identity, "", st.session_id, t.name, 0, sid};
  auto token = mint_token(claims, cfg.service_api_secret, now_ms() / 1000 + egress_token_ttl_s);
  auto base = cfg.livekit.public_base_url;
  while (!base.empty() && base.back() == '/') base.pop_back();
  const auto url = base + "/egress/audio?token=" + token;
  const bool mix = st.room_mode;
  call(self, "Egress", mix ? "StartEgress" : "StartTrackEgress",
       mix ? livekit_room_audio_egress_body(st.slug, url) : livekit_track_egress_body(st.slug, sid, url),
       livekit_grant{true, false, {}}, [self, sid, mix](const livekit_answer& a) {
         auto& s = self->state;
         auto it = s.tracks.find(sid);
         if (it == s.tracks.end()) return;  // a track is kept while starting (end_track); kept safe
         it->second.starting = false;
         std::optional<livekit_egress> e;
         if (a.ok) e = parse_livekit_egress(a.body);
         if (!e) {
           report(self, a, mix ? "starting the room's audio egress" : "starting the egress of track " + sid);
           if (it->second.gone) end_track(self, sid);
           finish_if_drained(self);
           return;  // retried by the next reconciliation (or start)
         }
         it->second.egress_id = e->egress_id;
         SW_LOG(s.ctx, info, "livekit: room=" << s.slug << " egress " << e->egress_id << " started for track " << sid);
         if (it->second.gone) {
           SW_LOG(s.ctx, info,
                  "livekit: room=" << s.slug << " track " << sid << " went while its egress started: stopping "
                                   << e->egress_id);
           end_track(self, sid);
         } else if (s.stopping) {
           stop_egress(self, sid);
         }
         publish(self);
         finish_if_drained(self);
       });
  publish(self);
}

// The room's participants as LiveKit lists them: start an egress for every published audio track that has none.
void apply_participants(self_ptr self, const std::vector<livekit_participant>& people) {
  auto& st = self->state;
  if (st.stopping) return;
  if (st.room_mode) {
    start_track(self, room_mix_track, "room", "Meeting");
    return;
  }
  for (auto& p : people) {
    if (p.egress) continue;
    for (auto& t : p.tracks)
      if (t.audio && !t.sid.empty()) start_track(self, t.sid, p.identity, p.name);
  }
}

void list_and_start(self_ptr self) {
  auto& st = self->state;
  if (st.stopping) return;
  if (st.room_mode) {
    apply_participants(self, {});
    return;
  }
  if (st.listing) {
    st.list_again = true;
    return;
  }
  st.listing = true;
  call(self, "RoomService", "ListParticipants", livekit_list_participants_body(st.slug),
       livekit_grant{false, true, st.slug}, [self](const livekit_answer& a) {
         auto& s = self->state;
         s.listing = false;
         auto people = a.ok ? parse_livekit_participants(a.body) : std::nullopt;
         if (!people) {
           report(self, a, "listing the room's participants");
         } else {
           apply_participants(self, *people);
         }
         if (s.list_again) {
           s.list_again = false;
           list_and_start(self);
         }
         finish_if_drained(self);
       });
}

bool streams_left(const egress_state& st) {
  if (!st.orphan_streams.empty()) return true;
  for (auto& [sid, t] : st.tracks)
    if (!t.streams.empty() || t.starting) return true;
  return false;
}

void finish_if_drained(self_ptr self) {
  auto& st = self->state;
  if (!st.stopping || streams_left(st)) return;
  for (auto& p : st.stop_waiters) p.deliver(true);
  st.stop_waiters.clear();
  self->quit();
}

void begin_stop(self_ptr self) {
  auto& st = self->state;
  if (st.stopping) return;
  st.stopping = true;
  SW_LOG(st.ctx, info, "livekit: room=" << st.slug << " transcription stopping");
  std::vector<std::string> sids;
  for (auto& [sid, t] : st.tracks) sids.push_back(sid);
  for (auto& sid : sids) stop_egress(self, sid);
  self->delayed_send(self, close_grace, timeout_atom::value);
  publish(self);
}

// Webhooks can be lost: the egresses LiveKit runs for the room, against the tracks the room publishes.
void reconcile(self_ptr self) {
  auto& st = self->state;
  if (st.stopping || st.reconciling || !st.started) return;
  st.reconciling = true;
  std::map<std::string, std::string> known;  // sid -> egress id, as this actor knew them before asking
  for (auto& [sid, t] : st.tracks)
    if (!t.egress_id.empty()) known[sid] = t.egress_id;
  call(self, "Egress", "ListEgress", livekit_list_egress_body(st.slug, true), livekit_grant{true, false, {}},
       [self, known](const livekit_answer& a) {
         auto& s = self->state;
         auto list = a.ok ? parse_livekit_egress_list(a.body) : std::nullopt;
         if (!list || s.stopping) {
           s.reconciling = false;
           if (!list && !s.stopping) report(self, a, "listing the room's egresses");
           return;
         }
         std::set<std::string> active;
         for (auto& e : *list)
           if (e.active()) active.insert(e.egress_id);
         // Ours that LiveKit no longer runs: forget them, to be started again if their track is still there.
         for (auto& [sid, id] : known) {
           auto it = s.tracks.find(sid);
           if (it != s.tracks.end() && it->second.egress_id == id && !active.count(id)) {
             SW_LOG(s.ctx, warn,
                    "livekit: room=" << s.slug << " egress " << id << " of track " << sid
                                     << " is no longer active; reconciling");
             s.ctx->metrics->count("livekit.reconciled_missing");
             it->second.egress_id.clear();
             it->second.stop_sent = false;
             if (it->second.streams.empty()) s.tracks.erase(it);
           }
         }
         // Egresses to this service's /egress/audio in this room that no track of ours knows: orphans (a lost
         // egress_ended, an earlier run); stopped.
         // An egress whose start has not been answered yet is listed before this actor knows its id: it is known
         // by its track (the room mix has none).
         std::set<std::string> ours, starting;
         for (auto& [sid, t] : s.tracks) {
           ours.insert(t.egress_id);
           if (t.starting) starting.insert(sid);
         }
         auto base = s.ctx->cfg.livekit.public_base_url;
         while (!base.empty() && base.back() == '/') base.pop_back();
         for (auto& e : *list) {
           if (!e.active() || ours.count(e.egress_id)) continue;
           if (e.websocket_url.rfind(base + "/egress/audio", 0) != 0) continue;  // not ours: not our business
           if (starting.count(e.track_id.empty() ? room_mix_track : e.track_id)) continue;
           SW_LOG(s.ctx, warn, "livekit: room=" << s.slug << " stopping orphan egress " << e.egress_id);
           s.ctx->metrics->count("livekit.reconciled_orphans");
           auto id = e.egress_id;
           call(self, "Egress", "StopEgress", livekit_stop_egress_body(id), livekit_grant{true, false, {}},
                [self, id](const livekit_answer& r) {
                  if (!r.ok && r.status != 404 && r.status != 412) report(self, r, "stopping orphan egress " + id);
                });
         }
         if (s.room_mode) {
           s.reconciling = false;
           apply_participants(self, {});
           return;
         }
         call(self, "RoomService", "ListParticipants", livekit_list_participants_body(s.slug),
              livekit_grant{false, true, s.slug}, [self](const livekit_answer& r) {
                auto& s2 = self->state;
                s2.reconciling = false;
                auto people = r.ok ? parse_livekit_participants(r.body) : std::nullopt;
                if (!people) {
                  if (!s2.stopping) report(self, r, "listing the room's participants");
                  return;
                }
                // Tracks no longer published (a lost track_unpublished / participant_left): stop their egress.
                std::set<std::string> published;
                for (auto& p : *people)
                  if (!p.egress)
                    for (auto& t : p.tracks)
                      if (t.audio) published.insert(t.sid);
                std::vector<std::string> gone;
                for (auto& [sid, t] : s2.tracks)
                  if (!t.starting && !published.count(sid)) gone.push_back(sid);
                for (auto& sid : gone) {
                  s2.ctx->metrics->count("livekit.reconciled_unpublished");
                  end_track(self, sid);
                }
                apply_participants(self, *people);
                publish(self);
              });
       });
}

// A stream ended. One that ended for a fault (`fault`: this service closed it, or it broke) while its egress runs
// unasked to stop leaves that egress without a stream: LiveKit fails such an egress, but may keep it ACTIVE
// (livekit/egress#143), and its egress_ended may never come. So it is stopped and forgotten here, and the next
// reconciliation starts a new one if the track is still published: RECONCILE_INTERVAL_MS later, a backoff for a
// server that shed the stream because it was behind. A stream its peer closed (EOS) is LiveKit's own end: its
// egress_ended (or the reconciliation) tells.
void forget_stream(self_ptr self, const caf::actor_addr& who, bool fault) {
  auto& st = self->state;
  auto drop = [&](std::vector<session_actor>& v) {
    auto end = std::remove_if(v.begin(), v.end(), [&](const session_actor& s) { return s.address() == who; });
    const bool found = end != v.end();
    v.erase(end, v.end());
    return found;
  };
  std::string lost;  // the track whose last stream ended for a fault
  for (auto& [sid, t] : st.tracks)
    if (drop(t.streams) && fault && t.streams.empty()) lost = sid;
  drop(st.orphan_streams);
  if (auto it = st.tracks.find(lost); !lost.empty() && it != st.tracks.end() && !st.stopping) {
    auto& t = it->second;
    if (!t.egress_id.empty() && !t.stop_sent) {
      SW_LOG(st.ctx, warn,
             "livekit: room=" << st.slug << " the stream of egress " << t.egress_id << " (track " << lost
                              << ") ended for a fault; stopping that egress, the next reconciliation starts another");
      st.ctx->metrics->count("livekit.egress_replaced");
      stop_egress(self, lost);
      t.egress_id.clear();
      t.stop_sent = false;
    }
  }
  publish(self);
  finish_if_drained(self);
}

}  // namespace

egress_actor::behavior_type egress(self_ptr self, context_ptr ctx, gateway_actor gateway, std::string slug) {
  auto& st = self->state;
  st.ctx = ctx;
  st.gateway = std::move(gateway);
  st.slug = std::move(slug);
  st.room_mode = ctx->cfg.livekit.egress_mode == "room";
  st.probe = actor_probe(ctx->metrics, "egress");
  self->set_down_handler([=](caf::down_msg& dm) { forget_stream(self, dm.source, is_stream_fault(dm.reason)); });
  self->attach_functor([m = ctx->metrics, slug = st.slug] { m->erase_egress_room(slug); });
  publish(self);
  using scope = probe_scope<std::remove_pointer_t<self_ptr>>;
  return {
      [=](start_atom, const egress_start& req) {
        scope t(self->state.probe, self);
        auto& s = self->state;
        if (s.stopping) return;
        if (!s.started) {
          s.started = true;
          s.session_id = req.session_id;
          SW_LOG(s.ctx, info,
                 "livekit: room=" << s.slug << " transcription starting (" << (s.room_mode ? "room" : "track")
                                  << " mode)");
          self->delayed_send(self, s.ctx->cfg.livekit.reconcile_interval, tick_atom::value);
        }
        list_and_start(self);
      },
      [=](stop_atom) -> caf::typed_response_promise<bool> {
        scope t(self->state.probe, self);
        auto& s = self->state;
        auto promise = self->make_response_promise<bool>();
        s.stop_waiters.push_back(promise);
        begin_stop(self);
        finish_if_drained(self);
        return promise;
      },
      [=](webhook_atom, const livekit_webhook& w) {
        scope t(self->state.probe, self);
        auto& s = self->state;
        if (s.stopping) return;
        if (w.event == "room_finished") {
          begin_stop(self);
          finish_if_drained(self);
        } else if (s.room_mode) {
          if (w.event == "egress_ended" && w.egress) {
            auto it = s.tracks.find(room_mix_track);
            if (it != s.tracks.end() && it->second.egress_id == w.egress->egress_id) end_track(self, room_mix_track);
          }
        } else if (w.event == "track_published") {
          if (w.track_audio && !w.participant_egress && !w.track_sid.empty() && s.started)
            start_track(self, w.track_sid, w.participant_identity, w.participant_name);
        } else if (w.event == "track_unpublished") {
          end_track(self, w.track_sid);
        } else if (w.event == "participant_left") {
          std::vector<std::string> sids;
          for (auto& [sid, tr] : s.tracks)
            if (tr.identity == w.participant_identity) sids.push_back(sid);
          for (auto& sid : sids) end_track(self, sid);
        } else if (w.event == "egress_ended" && w.egress) {
          for (auto& [sid, tr] : s.tracks)
            if (tr.egress_id == w.egress->egress_id) {
              tr.stop_sent = true;  // nothing to stop any more
              end_track(self, sid);
              break;
            }
        }
      },
      [=](attach_atom, const std::string& sid, const session_actor& stream) {
        scope t(self->state.probe, self);
        auto& s = self->state;
        self->monitor(stream);
        auto it = s.tracks.find(sid);
        if (it == s.tracks.end() || s.stopping) {
          // An egress this actor does not run (an earlier run's, or one being stopped): it drains like the others.
          s.orphan_streams.push_back(stream);
          if (s.stopping) self->send(stream, stop_atom::value);
        } else {
          it->second.streams.push_back(stream);
        }
        publish(self);
      },
      [=](reply_atom, const livekit_answer& a) {
        scope t(self->state.probe, self);
        auto& s = self->state;
        auto it = s.pending.find(a.call);
        if (it == s.pending.end()) return;
        auto then = std::move(it->second);
        s.pending.erase(it);
        then(a);
      },
      [=](tick_atom) {
        scope t(self->state.probe, self);
        auto& s = self->state;
        if (s.stopping) return;
        reconcile(self);
        self->delayed_send(self, s.ctx->cfg.livekit.reconcile_interval, tick_atom::value);
      },
      [=](timeout_atom) {
        scope t(self->state.probe, self);
        auto& s = self->state;
        if (!s.forced) {
          // LiveKit has not closed every stopped stream: drain them from this side (their last finals still
          // reach the room and the database), within the relays' own bounds: the drain, and as long again for the
          // finals that did not come (Gladia's result of the session).
          s.forced = true;
          for (auto& [sid, tr] : s.tracks)
            for (auto& stream : tr.streams) self->send(stream, stop_atom::value);
          for (auto& stream : s.orphan_streams) self->send(stream, stop_atom::value);
          self->delayed_send(self, 2 * s.ctx->cfg.stt_drain_timeout + close_grace, timeout_atom::value);
          return;
        }
        s.ctx->metrics->error("livekit.stop_bound",
                              "livekit: room=" + s.slug + ": streams still draining at the stop bound");
        for (auto& p : s.stop_waiters) p.deliver(false);
        s.stop_waiters.clear();
        self->quit();
      },
  };
}

}  // namespace sw
