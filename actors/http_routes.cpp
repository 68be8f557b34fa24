// The HTTP routes of the client protocol (shared/spec/client-protocol.md, "HTTP").
#include <algorithm>
#include <sstream>

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/egress.hpp"
#include "actors/gateway.hpp"
#include "proto/json.hpp"
#include "proto/number.hpp"
#include "proto/token.hpp"
#include "web/assets.hpp"

namespace sw {

namespace {

using self_ptr = gateway_actor::stateful_pointer<gateway_state>;

constexpr const char* version = "0.1.0";

struct route {
  const char* path;
  const char* allow;  // methods (besides OPTIONS)
};

// Every known path and its methods (405 for the others).
const route routes[] = {
    {"/", "GET"},
    {"/health", "GET"},
    {"/ready", "GET"},
    {"/metrics", "GET"},
    {"/api/active-speaker", "POST"},
    {"/api/transcription/start", "POST"},
    {"/api/transcription/stop", "POST"},
    {"/api/livekit/webhook", "POST"},
};

bool bearer_ok(const http_request& req, const std::string& secret) {
  if (secret.empty()) return false;
  auto h = req.header("authorization");
  if (!h) return false;
  const std::string prefix = "Bearer ";
  if (h->size() != prefix.size() + secret.size() || h->compare(0, prefix.size(), prefix) != 0) return false;
  // constant-time comparison of the secret
  unsigned char diff = 0;
  for (std::size_t i = 0; i < secret.size(); ++i)
    diff |= static_cast<unsigned char>((*h)[prefix.size() + i] ^ secret[i]);
  return diff == 0;
}

std::string fmt_double(double v) {
  std::ostringstream o;
  o.precision(6);
  o << std::fixed << v;
  return o.str();
}

void write_latency(json_builder& b, const latency_summary& s) {
  b.unum("count", s.count)
      .dbl("avgMs", s.avg)
      .dbl("minMs", s.min)
      .dbl("maxMs", s.max)
      .dbl("p50Ms", s.p50)
      .dbl("p95Ms", s.p95)
      .dbl("p99Ms", s.p99);
}

std::string metrics_json(gateway_state& st, const queue_stats& q) {
  auto& m = *st.ctx->metrics;
  auto& n = *st.ctx->net;
  auto snap = m.read();
  json_builder b;
  b.num("activeConnections", n.websockets.load())
      .num("activeGladiaBridges", m.active_relays.load())  // the old service's name, kept for the web app
      .num("activeSttRelays", m.active_relays.load())
      .unum("totalMessagesReceived", m.messages_received.load())
      .unum("totalMessagesSent", m.messages_sent.load())
      .unum("totalErrors", m.total_errors.load());
  if (!snap.last_error.empty())
    b.open("lastError").str("message", snap.last_error).str("timestamp", iso8601(snap.last_error_ms)).close();
  b.num("uptime", static_cast<std::int64_t>(snap.uptime_s));
  b.open("queue")
      .unum("queueLength", q.queue_length)
      .unum("totalQueued", q.total_queued)
      .unum("totalFlushed", q.total_flushed)
      .unum("totalErrors", q.total_errors)
      .unum("usagePending", q.usage_pending)
      .unum("parked", q.parked);
  if (q.last_flush_ms) b.str("lastFlushTime", iso8601(q.last_flush_ms));
  if (!q.last_error.empty()) b.str("lastError", q.last_error);
  b.close();
  b.open("latency");
  for (auto& [name, s] : snap.latency) {
    b.open_dynamic(name);
    write_latency(b, s);
    b.close();
  }
  b.close();
  auto counters = snap.counters;
  counters["net.http_requests"] = n.http_requests.load();
  counters["net.frames_in"] = n.frames_in.load();
  counters["net.frames_out"] = n.frames_out.load();
  counters["net.socket_reads"] = n.socket_reads.load();
  counters["net.held_audio_releases"] = n.held_audio_releases.load();
  counters["net.ends_found_at_pause"] = n.ends_found_at_pause.load();
  counters["ws.partials_skipped"] = n.partials_skipped.load();
  counters["ws.slow_client_closes"] = n.slow_client_closes.load();
  counters["ws.heartbeat_timeouts_total"] = n.heartbeat_timeouts.load();
  counters["ws.frame_floods"] = n.frame_floods.load();
  counters["ws.protocol_errors"] = n.protocol_errors.load();
  counters["net.tls_handshake_failures"] = n.tls_handshake_failures.load();
  counters["net.tls_reloads"] = n.tls_reloads.load();
  counters["net.tls_reload_failures"] = n.tls_reload_failures.load();
  counters["net.bad_requests"] = n.bad_requests.load();
  counters["net.bodies_too_large"] = n.bodies_too_large.load();
  counters["net.accept_errors"] = n.accept_errors.load();
  counters["net.read_buffer_bytes"] = static_cast<std::uint64_t>(std::max<std::int64_t>(0, n.read_buffer_bytes.load()));
  counters["net.open_connections"] = static_cast<std::uint64_t>(std::max<std::int64_t>(0, n.connections.load()));
  counters["stt.buffered_bytes"] = static_cast<std::uint64_t>(std::max<std::int64_t>(0, m.stt_buffered_bytes.load()));
  counters["memory.heap_in_use_bytes"] = m.heap_in_use_bytes.load();
  counters["memory.heap_free_bytes"] = m.heap_free_bytes.load();
  b.open("counters");
  for (auto& [name, v] : counters) b.num_dynamic(name, static_cast<std::int64_t>(v));
  b.close();
  b.open("sessionClients");
  for (auto& [slug, room] : st.rooms) b.num_dynamic(slug, room.streams);
  b.close();
  b.open("egress");  // LiveKit room transcription, per room
  for (auto& [slug, e] : snap.egress_rooms) {
    b.open_dynamic(slug)
        .str("mode", e.mode)
        .str("state", e.state)
        .unum("egresses", e.egresses)
        .unum("starting", e.starting)
        .unum("streams", e.streams)
        .unum("failures", e.failures);
    if (!e.last_error.empty()) b.str("lastError", e.last_error);
    b.close();
  }
  b.close();
  b.open("actors");
  for (auto& [kind, a] : snap.actors) {
    auto p = a->processing.summary();
    b.open_dynamic(kind)
        .num("live", a->live.load())
        .unum("spawned", a->spawned.load())
        .num("mailboxMax", a->mailbox_max.load())
        .num("mailboxSum", a->mailbox_sum.load())
        .unum("processed", a->processed.load())
        .dbl("processingP99Ms", p.p99)
        .close();
  }
  b.close();
  return b.done();
}

// Prometheus text format 0.0.4.
std::string metrics_prometheus(gateway_state& st, const queue_stats& q) {
  auto& m = *st.ctx->metrics;
  auto& n = *st.ctx->net;
  auto snap = m.read();
  std::ostringstream o;
  auto gauge = [&](const char* name, const char* help, double v) {
    o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " gauge\n" << name << ' ' << v << '\n';
  };
  auto counter = [&](const char* name, const char* help, double v) {
    o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n" << name << ' ' << v << '\n';
  };
  gauge("sessions_ws_active_connections", "Open client WebSockets.", static_cast<double>(n.websockets.load()));
  gauge("sessions_ws_active_stt_relays", "Live upstream STT relays.", static_cast<double>(m.active_relays.load()));
  gauge("sessions_ws_stt_buffered_bytes", "Audio held by the STT relays until the upstream acknowledges it.",
        static_cast<double>(m.stt_buffered_bytes.load()));
  gauge("sessions_ws_heap_in_use_bytes", "Heap allocated, as of the last memory trim.",
        static_cast<double>(m.heap_in_use_bytes.load()));
  gauge("sessions_ws_heap_free_bytes", "Free memory kept inside the heap after the last memory trim.",
        static_cast<double>(m.heap_free_bytes.load()));
  counter("sessions_ws_audio_frames_received_total", "Audio frames accepted.",
          static_cast<double>(m.messages_received.load()));
  counter("sessions_ws_messages_sent_total", "Transcripts handed to clients.",
          static_cast<double>(m.messages_sent.load()));
  counter("sessions_ws_errors_total", "Errors.", static_cast<double>(m.total_errors.load()));
  gauge("sessions_ws_uptime_seconds", "Seconds since start.", snap.uptime_s);
  gauge("sessions_ws_persist_queue_length", "Finals not yet in the database.", static_cast<double>(q.queue_length));
  gauge("sessions_ws_persist_usage_pending", "Usage rows not yet in the database.",
        static_cast<double>(q.usage_pending));
  gauge("sessions_ws_persist_parked", "Rows set aside: room unknown to the database, or refused; retried.",
        static_cast<double>(q.parked));
  counter("sessions_ws_partials_skipped_total", "Partials skipped for slow clients.",
          static_cast<double>(n.partials_skipped.load()));
  counter("sessions_ws_slow_client_closes_total", "Clients closed 4409.",
          static_cast<double>(n.slow_client_closes.load()));
  counter("sessions_ws_heartbeat_timeouts_total", "Clients closed 4408.",
          static_cast<double>(n.heartbeat_timeouts.load()));
  auto named = [&](const char* key) {
    auto it = snap.counters.find(key);
    return it == snap.counters.end() ? 0.0 : static_cast<double>(it->second);
  };
  counter("sessions_ws_overload_closes_total", "Streams closed 1013: the server fell behind reading audio.",
          named("ws.overload_closes"));
  counter("sessions_ws_overload_rejections_total", "Upgrades refused 503 while the server was behind.",
          named("ws.rejected_overload"));
  // Rooms are named by clients: a series per room would grow with client input, so Prometheus gets aggregates
  // and the per-room figures stay in the JSON.
  std::uint32_t largest = 0;
  for (auto& [slug, room] : st.rooms) largest = std::max(largest, room.streams);
  gauge("sessions_ws_rooms", "Rooms with at least one stream.", static_cast<double>(st.rooms.size()));
  gauge("sessions_ws_room_streams_max", "Streams in the largest room.", static_cast<double>(largest));
  double egresses = 0, egress_streams = 0, egress_failures = 0;
  for (auto& [slug, e] : snap.egress_rooms) {
    egresses += e.egresses;
    egress_streams += e.streams;
    egress_failures += static_cast<double>(e.failures);
  }
  gauge("sessions_ws_livekit_rooms", "Rooms transcribed through LiveKit egress.",
        static_cast<double>(snap.egress_rooms.size()));
  gauge("sessions_ws_livekit_egresses", "LiveKit egresses running for those rooms.", egresses);
  gauge("sessions_ws_livekit_egress_streams", "Their audio streams connected to /egress/audio.", egress_streams);
  gauge("sessions_ws_livekit_failures", "Failed LiveKit calls of the rooms transcribed now.", egress_failures);
  o << "# HELP sessions_ws_actors_live Live actors per kind.\n# TYPE sessions_ws_actors_live gauge\n";
  for (auto& [kind, a] : snap.actors)
    o << "sessions_ws_actors_live{kind=\"" << kind << "\"} " << a->live.load() << '\n';
  o << "# HELP sessions_ws_actor_messages_total Messages processed per actor kind.\n"
       "# TYPE sessions_ws_actor_messages_total counter\n";
  for (auto& [kind, a] : snap.actors)
    o << "sessions_ws_actor_messages_total{kind=\"" << kind << "\"} " << a->processed.load() << '\n';
  o << "# HELP sessions_ws_latency_ms Latency summaries (recent window).\n# TYPE sessions_ws_latency_ms summary\n";
  for (auto& [name, s] : snap.latency) {
    o << "sessions_ws_latency_ms{name=\"" << name << "\",quantile=\"0.5\"} " << fmt_double(s.p50) << '\n';
    o << "sessions_ws_latency_ms{name=\"" << name << "\",quantile=\"0.99\"} " << fmt_double(s.p99) << '\n';
    o << "sessions_ws_latency_ms_sum{name=\"" << name << "\"} " << fmt_double(s.avg * static_cast<double>(s.count))
      << '\n';
    o << "sessions_ws_latency_ms_count{name=\"" << name << "\"} " << s.count << '\n';
  }
  return o.str();
}

void respond_metrics(self_ptr self, const http_request& req, const http_responder_ptr& responder,
                     const queue_stats& q) {
  auto fmt = req.query_param("format");
  auto accept = req.header("accept");
  bool prometheus =
      (fmt && *fmt == "prometheus") || (!fmt && accept && accept->find("text/plain") != std::string::npos &&
                                        accept->find("application/json") == std::string::npos);
  if (prometheus) {
    http_response r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics_prometheus(self->state, q);
    responder->respond(std::move(r));
  } else {
    responder->respond(json_response(200, metrics_json(self->state, q)));
  }
}

// Asks persistence for its queue figures (or uses empty ones when there is none), then answers.
template <class F>
void with_queue(self_ptr self, F f) {
  auto& p = self->state.ctx->persistence;
  if (!p) {
    f(queue_stats{});
    return;
  }
  self->request(p, std::chrono::seconds(2), queue_atom::value)
      .then([f](const queue_stats& q) mutable { f(q); },
            [f](caf::error&) mutable {
              queue_stats q;
              q.last_error = "persistence did not answer";
              f(q);
            });
}

// A transcription token valid for `slug`; otherwise answers 401 (invalid) or 403 (another room) and says no.
bool token_admits(gateway_state& st, const std::string& token, const std::string& slug,
                  const http_responder_ptr& responder) {
  auto check = verify_token(token, st.ctx->cfg.jwt_secret);
  if (!check.claims) {
    responder->respond(
        json_response(401, json_builder().str("error", "invalid_token").str("message", check.reason).done()));
    return false;
  }
  if (check.claims->session_slug != slug) {
    responder->respond(json_response(403, json_error_body("session_mismatch")));
    return false;
  }
  return true;
}

void active_speaker(self_ptr self, const http_request& req, const http_responder_ptr& responder) {
  auto& st = self->state;
  auto body = parse_json_object(req.body);
  if (!body.ok) {
    responder->respond(json_response(400, json_error_body("invalid_json")));
    return;
  }
  auto slug = body.get("sessionSlug"), identity = body.get("identity"), token = body.get("token");
  if (slug.empty() || identity.empty() || token.empty()) {
    responder->respond(json_response(400, json_error_body("Missing required fields: sessionSlug, identity, token")));
    return;
  }
  if (!token_admits(st, token, slug, responder)) return;
  active_speaker_update u{identity, body.get("name"), body.get_int("timestamp")};
  if (!u.timestamp_ms) u.timestamp_ms = now_ms();
  if (auto room = st.rooms.find(slug); room != st.rooms.end())
    self->send(room->second.actor, speaker_atom::value, std::move(u));
  responder->respond(json_response(200, R"({"success":true})"));
}

// GET /api/sessions/{slug}/transcript[?offset=N][&limit=N]: Bearer transcription token of that room, or the service
// secret. A page of at most transcript_page_max segments; "nextOffset" when the room has more.
void stored_transcript(self_ptr self, const std::string& slug, const http_request& req,
                       const http_responder_ptr& responder) {
  auto& st = self->state;
  if (!bearer_ok(req, st.ctx->cfg.service_api_secret)) {
    auto h = req.header("authorization");
    std::string token = h && h->rfind("Bearer ", 0) == 0 ? h->substr(7) : std::string{};
    if (!token_admits(st, token, slug, responder)) return;
  }
  transcript_query q;
  q.slug = slug;
  constexpr std::uint64_t max_offset = 1'000'000'000'000;
  auto bad = [&](const std::string& message) {
    responder->respond(json_response(400, json_builder().str("error", "invalid_query").str("message", message).done()));
  };
  if (auto v = req.query_param("offset")) {
    auto n = whole_number(*v, 0, max_offset);
    if (!n) return bad("offset must be a whole number from 0 to " + std::to_string(max_offset));
    q.offset = *n;
  }
  if (auto v = req.query_param("limit")) {
    auto n = whole_number(*v, 1, transcript_page_max);
    if (!n) return bad("limit must be a whole number from 1 to " + std::to_string(transcript_page_max));
    q.limit = static_cast<std::uint32_t>(*n);
  }
  if (!st.ctx->persistence) {
    responder->respond(json_response(503, json_error_body("persistence_disabled")));
    return;
  }
  const auto next = q.offset + q.limit;
  self->request(st.ctx->persistence, std::chrono::seconds(10), history_atom::value, std::move(q))
      .then(
          [responder, slug, next](const transcript_result& r) {
            if (!r.error.empty()) {
              responder->respond(json_response(
                  503, json_builder().str("error", "database_unavailable").str("message", r.error).done()));
              return;
            }
            if (!r.found) {
              responder->respond(
                  json_response(404, json_builder().str("error", "session_not_found").str("sessionSlug", slug).done()));
              return;
            }
            std::string body = json_builder().str("sessionSlug", slug).done();
            body.pop_back();
            body += ",\"segments\":[";
            for (std::size_t i = 0; i < r.segments.size(); ++i) {
              const auto& g = r.segments[i];
              if (i) body += ',';
              body += json_builder()
                          .str("utteranceId", g.utterance_id)
                          .str("speakerId", g.speaker_id)
                          .str("speakerName", g.speaker_name)
                          .str("text", g.text)
                          .str("language", g.language)
                          .str("startedAt", g.started_at)
                          .str("endedAt", g.ended_at)
                          .done();
            }
            body += ']';
            if (r.more) body += ",\"nextOffset\":" + std::to_string(next);
            body += '}';
            responder->respond(json_response(200, std::move(body)));
          },
          [responder](caf::error&) {
            responder->respond(json_response(503, json_error_body("database_unavailable")));
          });
}

// The room's egress actor, spawned on first use (monitored: the gateway forgets it when it ends).
egress_actor egress_of_room(self_ptr self, const std::string& slug) {
  auto& st = self->state;
  if (auto it = st.egress_rooms.find(slug); it != st.egress_rooms.end()) return it->second;
  auto e = self->spawn<caf::linked>(egress, st.ctx, gateway_actor{self}, slug);
  self->monitor(e);
  st.egress_rooms.emplace(slug, e);
  return e;
}

// POST /api/transcription/start|stop (bearer SERVICE_API_SECRET): room transcription through LiveKit egress.
void room_transcription(self_ptr self, bool start, const http_request& req, const http_responder_ptr& responder) {
  auto& st = self->state;
  if (!bearer_ok(req, st.ctx->cfg.service_api_secret)) {
    responder->respond(json_response(401, R"({"ok":false,"error":"unauthorized"})"));
    return;
  }
  auto body = parse_json_object(req.body.empty() ? std::string_view("{}") : std::string_view(req.body));
  if (!body.ok) {
    responder->respond(json_response(400, json_error_body("invalid_json")));
    return;
  }
  if (!start) {
    auto id = body.get("sessionId");
    if (id.empty()) {
      responder->respond(json_response(400, json_error_body("Missing sessionId")));
      return;
    }
    auto done = [responder, id](bool) {
      responder->respond(json_response(200, json_builder().boolean("success", true).str("sessionId", id).done()));
    };
    auto slug = st.egress_sessions.find(id);
    auto room = slug == st.egress_sessions.end() ? st.egress_rooms.end() : st.egress_rooms.find(slug->second);
    if (room == st.egress_rooms.end()) {
      done(true);  // nothing ran: nothing to stop
      return;
    }
    auto e = room->second;
    const std::string room_slug = slug->second;
    // A start after this stop begins a new run (a new egress actor), while this one drains.
    st.egress_rooms.erase(room);
    st.egress_sessions.erase(slug);
    st.stopping_egress_rooms[room_slug] = e;
    auto stopped = [self, e, room_slug] {
      auto& rooms = self->state.stopping_egress_rooms;
      if (auto it = rooms.find(room_slug); it != rooms.end() && it->second == e) rooms.erase(it);
    };
    self->request(e, caf::infinite, stop_atom::value)
        .then(
            [done, stopped](bool drained) {
              stopped();
              done(drained);
            },
            [done, stopped](caf::error&) {
              stopped();
              done(false);
            });
    return;
  }
  auto id = body.get("sessionId"), slug = body.get("sessionSlug");
  if (id.empty() || slug.empty()) {
    responder->respond(json_response(400, R"({"ok":false,"error":"Missing sessionId or sessionSlug"})"));
    return;
  }
  if (!st.ctx->livekit) {
    responder->respond(json_response(503, R"({"ok":false,"error":"livekit_not_configured"})"));
    return;
  }
  if (st.shutting_down) {
    responder->respond(json_response(503, R"({"ok":false,"error":"shutting_down"})"));
    return;
  }
  auto e = egress_of_room(self, slug);
  st.egress_sessions[id] = slug;
  self->send(e, start_atom::value, egress_start{id, slug});
  responder->respond(json_response(200, R"({"ok":true,"mode":"live"})"));
}

// POST /api/livekit/webhook: signed by LiveKit (checked before the body is read), for the room's egress actor.
void livekit_webhook_route(self_ptr self, const http_request& req, const http_responder_ptr& responder) {
  auto& st = self->state;
  if (!st.ctx->livekit) {
    responder->respond(json_response(503, R"({"ok":false,"error":"livekit_not_configured"})"));
    return;
  }
  const auto& lk = st.ctx->cfg.livekit;
  auto auth = req.header("authorization");
  auto problem = verify_livekit_webhook(auth ? *auth : std::string{}, req.body, lk.api_key, lk.api_secret);
  if (!problem.empty()) {
    st.ctx->metrics->note("livekit.webhooks_refused", "webhook refused from " + req.remote + ": " + problem);
    responder->respond(json_response(
        401, json_builder().boolean("ok", false).str("error", "unauthorized").str("message", problem).done()));
    return;
  }
  auto w = parse_livekit_webhook(req.body);
  if (!w) {
    st.ctx->metrics->note("livekit.webhooks_invalid", "webhook with an unreadable body from " + req.remote);
    responder->respond(json_response(400, R"({"ok":false,"error":"invalid_webhook"})"));
    return;
  }
  st.ctx->metrics->count("livekit.webhooks");
  SW_LOG(st.ctx, debug, "livekit webhook " << w->event << " room=" << w->room);
  if (auto it = st.egress_rooms.find(w->room); it != st.egress_rooms.end())
    self->send(it->second, webhook_atom::value, std::move(*w));
  responder->respond(json_response(200, R"({"ok":true})"));
}

// GET /demo and its files: a page that only talks to this origin (CSP), revalidated on every load (no-cache with
// an ETag: an unchanged file costs a 304), never framed, never sniffed.
void demo_page(const web::asset& page, const http_request& req, const http_responder_ptr& responder) {
  if (req.method != "GET" && req.method != "HEAD") {
    auto r = json_response(405, json_builder().str("error", "Method not allowed").str("method", req.method).done());
    r.headers.emplace_back("Allow", "GET, HEAD, OPTIONS");
    responder->respond(std::move(r));
    return;
  }
  http_response r;
  r.headers.emplace_back("Cache-Control", "no-cache");
  r.headers.emplace_back("ETag", std::string(page.etag));
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  r.headers.emplace_back("Content-Security-Policy",
                         "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                         "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'");
  r.headers.emplace_back("Permissions-Policy", "microphone=(self)");
  auto match = req.header("if-none-match");
  if (match && match->find(page.etag) != std::string::npos) {
    r.status = 304;
    r.content_type.clear();
  } else {
    r.content_type = std::string(page.content_type);
    r.body = std::string(page.body);
  }
  responder->respond(std::move(r));
}

}  // namespace

void handle_http(self_ptr self, const http_request& req, const http_responder_ptr& responder) {
  auto& st = self->state;
  if (req.method == "OPTIONS") {
    http_response r;
    r.status = 204;
    responder->respond(std::move(r));
    return;
  }
  if (req.path == "/api/realtime/transcribe") {
    responder->respond(json_response(426, json_error_body("WebSocket endpoint. Use WebSocket upgrade.")));
    return;
  }
  const std::string prefix = "/api/sessions/", suffix = "/transcript";
  if (req.path.size() > prefix.size() + suffix.size() && req.path.rfind(prefix, 0) == 0 &&
      req.path.compare(req.path.size() - suffix.size(), suffix.size(), suffix) == 0) {
    auto slug = req.path.substr(prefix.size(), req.path.size() - prefix.size() - suffix.size());
    if (req.method != "GET") {
      auto r = json_response(405, json_builder().str("error", "Method not allowed").str("method", req.method).done());
      r.headers.emplace_back("Allow", "GET, OPTIONS");
      responder->respond(std::move(r));
      return;
    }
    if (slug.find('/') == std::string::npos) {
      stored_transcript(self, slug, req, responder);
      return;
    }
  }
  if (auto page = web::find_asset(req.path)) {
    demo_page(*page, req, responder);
    return;
  }
  const route* found = nullptr;
  for (auto& r : routes)
    if (req.path == r.path) found = &r;
  if (!found) {
    responder->respond(json_response(
        404, json_builder().str("error", "Not found").str("path", req.path).str("method", req.method).done()));
    return;
  }
  if (req.method != found->allow) {
    auto r = json_response(405, json_builder().str("error", "Method not allowed").str("method", req.method).done());
    r.headers.emplace_back("Allow", std::string(found->allow) + ", OPTIONS");
    responder->respond(std::move(r));
    return;
  }
  const std::string path = req.path;
  if (path == "/") {
    responder->respond(json_response(200, json_builder()
                                              .str("service", "sessions-ws")
                                              .str("status", "running")
                                              .str("version", version)
                                              .open("endpoints")
                                              .str("health", "/health")
                                              .str("ready", "/ready")
                                              .str("metrics", "/metrics")
                                              .str("demo", "/demo")
                                              .str("websocket", "/api/realtime/transcribe")
                                              .str("activeSpeaker", "POST /api/active-speaker")
                                              .str("startTranscription", "POST /api/transcription/start")
                                              .str("stopTranscription", "POST /api/transcription/stop")
                                              .close()
                                              .str("timestamp", iso8601(now_ms()))
                                              .done()));
  } else if (path == "/health") {
    auto failure = st.ctx->metrics->failure();
    with_queue(self, [responder, failure](const queue_stats& q) {
      json_builder b;
      b.str("status", failure.empty() ? "ok" : "error").str("timestamp", iso8601(now_ms()));
      b.unum("queueLength", q.queue_length);
      if (!failure.empty()) b.str("error", failure);
      responder->respond(json_response(failure.empty() ? 200 : 503, b.done()));
    });
  } else if (path == "/ready") {
    bool has_db = static_cast<bool>(st.ctx->persistence);
    bool stt_ok = static_cast<bool>(st.ctx->stt.spawn);
    std::string provider = st.ctx->stt.name.empty() ? "none" : st.ctx->stt.name;
    auto failure = st.ctx->metrics->failure();
    const bool draining = st.shutting_down;
    with_queue(self, [responder, has_db, stt_ok, provider, failure, draining](const queue_stats& q) {
      bool db_ok = has_db && q.database_ok;
      // A persistence bound reached (finals only in the journal, or parked rows given up): take no new streams.
      bool persist_ok = !has_db || !q.bounded_out;
      // Draining after a SIGTERM: a proxy's health check sees it at once and sends new streams elsewhere, while
      // this instance still answers (new upgrades 503 shutting_down) and its streams drain before their 1001.
      bool ready = db_ok && persist_ok && stt_ok && failure.empty() && !draining;
      json_builder b;
      b.str("status", ready ? "ready" : "not_ready");
      if (!failure.empty()) b.str("error", failure);
      if (draining) b.boolean("draining", true);
      b.open("checks").open("database").boolean("ok", db_ok);
      if (!has_db)
        b.str("error", "persistence is not configured");
      else if (!q.backend.empty())
        b.str("backend", q.backend);
      b.close();
      if (has_db)
        b.open("persistence")
            .boolean("ok", persist_ok)
            .unum("queueLength", q.queue_length)
            .unum("usagePending", q.usage_pending)
            .unum("parked", q.parked)
            .close();
      b.open("stt").boolean("ok", stt_ok).str("provider", provider).close().close();
      responder->respond(json_response(ready ? 200 : 503, b.done()));
    });
  } else if (path == "/metrics") {
    with_queue(self, [self, req, responder](const queue_stats& q) { respond_metrics(self, req, responder, q); });
  } else if (path == "/api/active-speaker") {
    active_speaker(self, req, responder);
  } else if (path == "/api/transcription/start" || path == "/api/transcription/stop") {
    room_transcription(self, path == "/api/transcription/start", req, responder);
  } else if (path == "/api/livekit/webhook") {
    livekit_webhook_route(self, req, responder);
  }
}

}  // namespace sw
