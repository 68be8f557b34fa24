#include "actors/gateway.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/room.hpp"
#include "actors/session.hpp"
#include "proto/json.hpp"
#include "proto/token.hpp"

namespace sw {

namespace {

using self_ptr = gateway_actor::stateful_pointer<gateway_state>;

std::string random_key(std::mt19937_64& rng) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return std::string(buf, 12);
}

void uncount_user(gateway_state& st, const std::string& user) {
  auto u = st.per_user.find(user);
  if (u != st.per_user.end() && --u->second == 0) st.per_user.erase(u);
}

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// After a stream reports the server behind: upgrades get 503 for this long; and after a shed no other for this long,
// while the streams kept read what waited.
constexpr std::int64_t overload_refusal_ms = 5'000;
constexpr std::int64_t shed_pause_ms = 5'000;

// The server reads audio slower than it comes: the newest tenth of the streams goes (closed 1013; at least one), and
// after 5 s, while streams still report, the newest tenth of the rest, and so on. The oldest conversations keep a
// server that keeps up, and the clients shed are told to come back later. (How far over its capacity the server is
// cannot be told from here: when it reads too slowly the clients' own buffers take what waits. So it goes by steps,
// each seen through before the next.)
void handle_behind(self_ptr self, std::uint32_t backlog_ms) {
  auto& st = self->state;
  const auto now = steady_ms();
  st.overloaded_until = now + overload_refusal_ms;
  if (now < st.next_shed || st.shutting_down) return;
  std::vector<std::pair<std::uint64_t, gateway_state::stream_entry*>> open;
  for (auto& [addr, e] : st.streams)
    if (!e.draining && !e.shed) open.emplace_back(e.id, &e);
  auto reporter = st.streams.find(caf::actor_cast<caf::actor_addr>(self->current_sender()));
  if (open.empty()) return;
  const auto n = open.size();
  const auto k = (n + 9) / 10;
  std::partial_sort(open.begin(), open.begin() + static_cast<std::ptrdiff_t>(k), open.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });
  for (std::size_t i = 0; i < k; ++i) {
    open[i].second->shed = true;
    self->send(open[i].second->actor, shed_atom::value);
  }
  st.next_shed = now + shed_pause_ms;
  st.ctx->metrics->count("ws.overload_closes", k);
  st.ctx->metrics->note("ws.overloads", "the server falls behind reading audio: stream " +
                                            std::to_string(reporter == st.streams.end() ? 0 : reporter->second.id) +
                                            " has " + std::to_string(backlog_ms) + " ms of it unread; closing the " +
                                            std::to_string(k) + " newest of " + std::to_string(n) +
                                            " streams with 1013, upgrades refused (503) meanwhile");
}

void handle_upgrade(self_ptr self, const http_request& req, const upgrade_responder_ptr& responder) {
  auto& st = self->state;
  // Participants' browsers, with the web app's tokens; or a LiveKit Track Egress, with the token this service
  // signed (SERVICE_API_SECRET) when it started that egress, naming the track.
  const bool egress = req.path == "/egress/audio";
  if (req.path != "/api/realtime/transcribe" && !egress) {
    responder->reject(json_response(
        404, json_builder().str("error", "Not found").str("path", req.path).str("method", req.method).done()));
    return;
  }
  const std::string* token = req.query_param("token");
  auto check =
      verify_token(token ? *token : std::string{}, egress ? st.ctx->cfg.service_api_secret : st.ctx->cfg.jwt_secret);
  if (check.claims && egress && check.claims->track_id.empty()) {
    check.claims.reset();
    check.reason = "not an egress token (no trackId claim)";
  }
  if (!check.claims) {
    st.ctx->metrics->note("ws.auth_failures", "upgrade refused from " + req.remote + ": " + check.reason);
    responder->reject(
        json_response(401, json_builder().str("error", "invalid_token").str("message", check.reason).done()));
    return;
  }
  auto& claims = *check.claims;
  if (auto slug = req.query_param("sessionSlug"); slug && !slug->empty() && *slug != claims.session_slug) {
    responder->reject(json_response(403, json_error_body("session_mismatch")));
    return;
  }
  if (st.shutting_down) {
    responder->reject(json_response(503, json_error_body("shutting_down")));
    return;
  }
  if (steady_ms() < st.overloaded_until) {
    st.ctx->metrics->note("ws.rejected_overload",
                          "upgrade refused (the server falls behind reading audio): room=" + claims.session_slug);
    auto res = json_response(503, json_error_body("overloaded"));
    res.headers.emplace_back("Retry-After", "5");
    responder->reject(std::move(res));
    return;
  }
  const auto& cfg = st.ctx->cfg;
  const char* scope = nullptr;
  auto room_it = st.rooms.find(claims.session_slug);
  if (st.streams.size() >= cfg.max_streams) {
    scope = "server";
  } else if (room_it != st.rooms.end() && room_it->second.streams >= cfg.max_streams_per_room) {
    scope = "room";
  } else if (auto u = st.per_user.find(claims.user_id);
             u != st.per_user.end() && u->second >= cfg.max_streams_per_user) {
    scope = "user";
  }
  if (scope) {
    st.ctx->metrics->note(
        std::string("ws.rejected_") + scope,
        "upgrade refused (too many streams per " + std::string(scope) + "): room=" + claims.session_slug);
    auto res = json_response(429, json_builder().str("error", "too_many_streams").str("scope", scope).done());
    res.headers.emplace_back("Retry-After", "5");
    responder->reject(std::move(res));
    return;
  }
  if (room_it == st.rooms.end()) {
    auto r = self->spawn<caf::linked>(room, st.ctx, claims.session_slug);
    room_it = st.rooms.emplace(claims.session_slug, gateway_state::room_entry{r, 0}).first;
  }
  stream_identity who;
  who.stream_id = st.next_stream_id++;
  who.stream_key = random_key(st.rng);
  who.session_slug = claims.session_slug;
  who.session_id = claims.session_id;
  who.identity = claims.identity;
  who.user_id = claims.user_id;
  who.name = claims.name.empty() ? claims.identity : claims.name;
  if (egress) who.track_id = claims.track_id;
  auto format = req.query_param("format");
  bool legacy = format && *format == "legacy";
  auto s = self->spawn<caf::linked>(session, st.ctx, who, legacy, room_it->second.actor, gateway_actor{self});
  self->monitor(s);
  if (egress) {  // to the room's running egress actor, else to a stopping one (which stops the stream)
    if (auto e = st.egress_rooms.find(claims.session_slug); e != st.egress_rooms.end()) {
      self->send(e->second, attach_atom::value, claims.track_id, s);
    } else if (auto d = st.stopping_egress_rooms.find(claims.session_slug); d != st.stopping_egress_rooms.end()) {
      self->send(d->second, attach_atom::value, claims.track_id, s);
    }
  }
  ++room_it->second.streams;
  ++st.per_user[claims.user_id];
  st.streams.emplace(s.address(), gateway_state::stream_entry{s, claims.session_slug, claims.user_id, who.stream_id});
  st.ctx->metrics->live_streams = static_cast<std::int64_t>(st.streams.size());
  responder->accept(s);
}

}  // namespace

gateway_actor::behavior_type gateway(self_ptr self, context_ptr ctx) {
  self->state.ctx = ctx;
  self->state.started_ms = now_ms();
  self->state.probe = actor_probe(ctx->metrics, "gateway");
  // Rooms and sessions are linked to this actor, so that they end with it: nobody else could count them or stop
  // them. Their own ends, whatever the reason, are the down handler's business; only an exit sent to this actor
  // (anonymously, by the service) ends it.
  self->set_exit_handler([=](caf::exit_msg& em) {
    if (!em.source || em.source == self->address()) self->quit(em.reason);
  });
  self->set_down_handler([=](caf::down_msg& dm) {
    auto& st = self->state;
    auto it = st.streams.find(dm.source);
    if (it == st.streams.end()) {
      for (auto e = st.egress_rooms.begin(); e != st.egress_rooms.end(); ++e) {
        if (e->second.address() != dm.source) continue;
        for (auto s = st.egress_sessions.begin(); s != st.egress_sessions.end();)
          s = s->second == e->first ? st.egress_sessions.erase(s) : std::next(s);
        st.egress_rooms.erase(e);
        break;
      }
      return;
    }
    auto room_it = st.rooms.find(it->second.slug);
    if (room_it != st.rooms.end() && --room_it->second.streams == 0) {
      self->send_exit(room_it->second.actor, caf::exit_reason::user_shutdown);
      st.rooms.erase(room_it);
    }
    if (!it->second.draining) uncount_user(st, it->second.user);
    st.streams.erase(it);
    st.ctx->metrics->live_streams = static_cast<std::int64_t>(st.streams.size());
  });
  using scope = probe_scope<std::remove_pointer_t<self_ptr>>;
  return {
      [=](http_atom, const http_request& req, const http_responder_ptr& responder) {
        scope t(self->state.probe, self);
        handle_http(self, req, responder);
      },
      [=](upgrade_atom, const http_request& req, const upgrade_responder_ptr& responder) {
        scope t(self->state.probe, self);
        handle_upgrade(self, req, responder);
      },
      [=](leave_atom) {
        scope t(self->state.probe, self);
        auto& st = self->state;
        auto sender = self->current_sender();
        if (!sender) return;
        auto it = st.streams.find(caf::actor_cast<caf::actor_addr>(sender));
        if (it == st.streams.end() || it->second.draining) return;
        it->second.draining = true;
        uncount_user(st, it->second.user);
      },
      [=](behind_atom, std::uint32_t backlog_ms) {
        scope t(self->state.probe, self);
        handle_behind(self, backlog_ms);
      },
      [=](notice_atom, const std::string& slug, std::string& json) {
        scope t(self->state.probe, self);
        auto& st = self->state;
        if (auto room = st.rooms.find(slug); room != st.rooms.end())
          self->send(room->second.actor, notice_atom::value, std::move(json));
      },
      [=](shutdown_atom) {
        scope t(self->state.probe, self);
        auto& st = self->state;
        st.shutting_down = true;
        for (auto& [addr, entry] : st.streams) self->send(entry.actor, shutdown_atom::value);
      },
  };
}

}  // namespace sw
