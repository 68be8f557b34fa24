#include "proto/livekit.hpp"

#include <jwt/jwt.hpp>

#include "proto/rapidjson.hpp"

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
  if (auto track = member(o, "track", "track"); track && track->IsObject())
    e.track_id = text(*track, "track_id", "trackId");
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
  auto code = text(d, "code", "code"), msg = text(d, "msg", "msg");
  if (code.empty()) return "LiveKit answered " + status;
  return "LiveKit " + code + (msg.empty() ? "" : ": " + msg) + " (" + status + ")";
}

}  // namespace sw
