#include "proto/livekit.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <jwt/jwt.hpp>

#include "proto/json.hpp"
#include "proto/rapidjson.hpp"
#include "proto/token.hpp"

namespace sw {

namespace {

// The member under its proto name or its lowerCamelCase name.
const rapidjson::Value* member(const rapidjson::Value& o, const char* snake, const char* camel) {
  if (!o.IsObject()) return nullptr;
  auto it = o.FindMember(snake);
  if (it == o.MemberEnd()) it = o.FindMember(camel);
  return it == o.MemberEnd() ? nullptr : &it->value;
}

std::string text(const rapidjson::Value& o, const char* snake, const char* camel) {
  auto v = member(o, snake, camel);
  return v && v->IsString() ? std::string(v->GetString(), v->GetStringLength()) : std::string();
}

bool flag(const rapidjson::Value& o, const char* key) {
  auto v = member(o, key, key);
  return v && v->IsBool() && v->GetBool();
}

// An enum as its name, or its number mapped through `names` (out of range: the number as text).
std::string enum_name(const rapidjson::Value& o, const char* snake, const char* camel,
                      const std::vector<const char*>& names) {
  auto v = member(o, snake, camel);
  if (!v) return names.empty() ? std::string() : names[0];  // protojson leaves the default (0) out when told to
  if (v->IsString()) return std::string(v->GetString(), v->GetStringLength());
  if (v->IsUint() && v->GetUint() < names.size()) return names[v->GetUint()];
  if (v->IsInt64()) return std::to_string(v->GetInt64());
  return {};
}

const std::vector<const char*> track_types = {"AUDIO", "VIDEO", "DATA"};
const std::vector<const char*> participant_kinds = {"STANDARD", "INGRESS", "EGRESS", "SIP", "AGENT"};
const std::vector<const char*> egress_statuses = {"EGRESS_STARTING",     "EGRESS_ACTIVE", "EGRESS_ENDING",
                                                  "EGRESS_COMPLETE",     "EGRESS_FAILED", "EGRESS_ABORTED",
                                                  "EGRESS_LIMIT_REACHED"};

livekit_egress egress_of(const rapidjson::Value& o) {
  livekit_egress e;
  e.egress_id = text(o, "egress_id", "egressId");
  e.room_name = text(o, "room_name", "roomName");
  e.status = enum_name(o, "status", "status", egress_statuses);
  e.error = text(o, "error", "error");
  if (auto track = member(o, "track", "track"); track && track->IsObject()) {
    e.track_id = text(*track, "track_id", "trackId");
    e.websocket_url = text(*track, "websocket_url", "websocketUrl");
  }
  if (auto streams = member(o, "stream_results", "streamResults");
      e.websocket_url.empty() && streams && streams->IsArray() && !streams->Empty() && (*streams)[0].IsObject())
    e.websocket_url = text((*streams)[0], "url", "url");
  return e;
}

}  // namespace

std::string livekit_access_token(const std::string& api_key, const std::string& api_secret, const livekit_grant& grant,
                                 std::int64_t now_s, std::int64_t ttl_s) {
  jwt::jwt_object obj{jwt::params::algorithm("HS256"), jwt::params::secret(api_secret)};
  obj.add_claim("iss", api_key);
  obj.add_claim("iat", now_s);
  obj.add_claim("nbf", now_s);
  obj.add_claim("exp", now_s + ttl_s);
  nlohmann::json video = nlohmann::json::object();
  if (grant.room_record) video["roomRecord"] = true;
  if (grant.room_admin) video["roomAdmin"] = true;
  if (!grant.room.empty()) video["room"] = grant.room;
  obj.payload().add_claim("video", video);
  return obj.signature();
}

std::optional<std::vector<livekit_participant>> parse_livekit_participants(std::string_view json) {
  rapidjson::Document d;
  if (!parse_json(d, json) || !d.IsObject()) return std::nullopt;
  std::vector<livekit_participant> out;
  auto list = member(d, "participants", "participants");
  if (!list) return out;  // no participants: protojson may leave an empty list out
  if (!list->IsArray()) return std::nullopt;
  for (auto& p : list->GetArray()) {
    if (!p.IsObject()) return std::nullopt;
    livekit_participant lp;
    lp.sid = text(p, "sid", "sid");
    lp.identity = text(p, "identity", "identity");
    lp.name = text(p, "name", "name");
    lp.egress = enum_name(p, "kind", "kind", participant_kinds) == "EGRESS";
    if (auto tracks = member(p, "tracks", "tracks"); tracks && tracks->IsArray()) {
      for (auto& t : tracks->GetArray()) {
        if (!t.IsObject()) continue;
        livekit_track lt;
        lt.sid = text(t, "sid", "sid");
        lt.name = text(t, "name", "name");
        lt.audio = enum_name(t, "type", "type", track_types) == "AUDIO";
        lt.muted = flag(t, "muted");
        lp.tracks.push_back(std::move(lt));
      }
    }
    out.push_back(std::move(lp));
  }
  return out;
}

std::optional<livekit_egress> parse_livekit_egress(std::string_view json) {
  rapidjson::Document d;
  if (!parse_json(d, json) || !d.IsObject()) return std::nullopt;
  auto e = egress_of(d);
  if (e.egress_id.empty()) return std::nullopt;
  return e;
}

std::optional<std::vector<livekit_egress>> parse_livekit_egress_list(std::string_view json) {
  rapidjson::Document d;
  if (!parse_json(d, json) || !d.IsObject()) return std::nullopt;
  std::vector<livekit_egress> out;
  auto items = member(d, "items", "items");
  if (!items) return out;
  if (!items->IsArray()) return std::nullopt;
  for (auto& i : items->GetArray()) {
    if (!i.IsObject()) return std::nullopt;
    out.push_back(egress_of(i));
  }
  return out;
}

std::string livekit_error_message(unsigned http_status, std::string_view body) {
  const std::string status = "HTTP " + std::to_string(http_status);
  rapidjson::Document d;
  if (!parse_json(d, body) || !d.IsObject()) return "LiveKit answered " + status;
  auto code = excerpt(text(d, "code", "code"), 64), msg = excerpt(text(d, "msg", "msg"));
  if (code.empty()) return "LiveKit answered " + status;
  return "LiveKit " + code + (msg.empty() ? "" : ": " + msg) + " (" + status + ")";
}

namespace {

using writer = rapidjson::Writer<rapidjson::StringBuffer>;

void key_str(writer& w, const char* k, const std::string& v) {
  w.Key(k);
  w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
}

std::string base64_sha256(std::string_view body) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(body.data()), body.size(), digest);
  unsigned char out[4 * ((SHA256_DIGEST_LENGTH + 2) / 3) + 1];
  int n = EVP_EncodeBlock(out, digest, SHA256_DIGEST_LENGTH);
  return std::string(reinterpret_cast<char*>(out), static_cast<std::size_t>(n));
}

}  // namespace

std::string livekit_list_participants_body(const std::string& room) {
  rapidjson::StringBuffer b;
  writer w(b);
  w.StartObject();
  key_str(w, "room", room);
  w.EndObject();
  return b.GetString();
}

std::string livekit_track_egress_body(const std::string& room, const std::string& track_id,
                                      const std::string& websocket_url) {
  rapidjson::StringBuffer b;
  writer w(b);
  w.StartObject();
  key_str(w, "room_name", room);
  key_str(w, "track_id", track_id);
  key_str(w, "websocket_url", websocket_url);
  w.EndObject();
  return b.GetString();
}

std::string livekit_room_audio_egress_body(const std::string& room, const std::string& websocket_url) {
  rapidjson::StringBuffer b;
  writer w(b);
  w.StartObject();
  key_str(w, "room_name", room);
  w.Key("media");
  w.StartObject();
  w.Key("audio");
  w.StartObject();
  w.Key("capture_all");
  w.Bool(true);
  w.EndObject();
  w.EndObject();
  w.Key("outputs");
  w.StartArray();
  w.StartObject();
  w.Key("stream");
  w.StartObject();
  key_str(w, "protocol", "WEBSOCKET");
  w.Key("urls");
  w.StartArray();
  w.String(websocket_url.data(), static_cast<rapidjson::SizeType>(websocket_url.size()));
  w.EndArray();
  w.EndObject();
  w.EndObject();
  w.EndArray();
  w.EndObject();
  return b.GetString();
}

std::string livekit_stop_egress_body(const std::string& egress_id) {
  rapidjson::StringBuffer b;
  writer w(b);
  w.StartObject();
  key_str(w, "egress_id", egress_id);
  w.EndObject();
  return b.GetString();
}

std::string livekit_list_egress_body(const std::string& room, bool active_only) {
  rapidjson::StringBuffer b;
  writer w(b);
  w.StartObject();
  key_str(w, "room_name", room);
  w.Key("active");
  w.Bool(active_only);
  w.EndObject();
  return b.GetString();
}

std::string verify_livekit_webhook(const std::string& authorization, std::string_view body, const std::string& api_key,
                                   const std::string& api_secret) {
  if (authorization.empty()) return "missing Authorization header";
  auto checked = verify_jwt(authorization, api_secret);
  if (!checked.json) return checked.reason;
  rapidjson::Document d;
  if (!parse_json(d, *checked.json) || !d.IsObject()) return "token is malformed";
  if (json_string(d, "iss") != api_key) return "token issuer is not this service's LiveKit API key";
  const std::string claimed = json_string(d, "sha256");
  const std::string actual = base64_sha256(body);
  if (claimed.size() != actual.size() || CRYPTO_memcmp(claimed.data(), actual.data(), actual.size()) != 0)
    return "body does not match the token's sha256 claim";
  return {};
}

std::string livekit_webhook_token(const std::string& api_key, const std::string& api_secret, std::string_view body,
                                  std::int64_t now_s, std::int64_t ttl_s) {
  jwt::jwt_object obj{jwt::params::algorithm("HS256"), jwt::params::secret(api_secret)};
  obj.add_claim("iss", api_key);
  obj.add_claim("nbf", now_s);
  obj.add_claim("exp", now_s + ttl_s);
  obj.add_claim("sha256", base64_sha256(body));
  return obj.signature();
}

std::optional<livekit_webhook> parse_livekit_webhook(std::string_view json) {
  rapidjson::Document d;
  if (!parse_json(d, json) || !d.IsObject()) return std::nullopt;
  livekit_webhook w;
  w.event = text(d, "event", "event");
  if (w.event.empty()) return std::nullopt;
  w.id = text(d, "id", "id");
  if (auto room = member(d, "room", "room"); room && room->IsObject()) w.room = text(*room, "name", "name");
  if (auto p = member(d, "participant", "participant"); p && p->IsObject()) {
    w.participant_identity = text(*p, "identity", "identity");
    w.participant_name = text(*p, "name", "name");
    w.participant_egress = enum_name(*p, "kind", "kind", participant_kinds) == "EGRESS";
  }
  if (auto t = member(d, "track", "track"); t && t->IsObject()) {
    w.track_sid = text(*t, "sid", "sid");
    w.track_audio = enum_name(*t, "type", "type", track_types) == "AUDIO";
  }
  if (auto e = member(d, "egress_info", "egressInfo"); e && e->IsObject()) {
    w.egress = egress_of(*e);
    if (w.room.empty()) w.room = w.egress->room_name;
  }
  return w;
}

}  // namespace sw
