#include "actors/json.hpp"

#include "actors/rapidjson.hpp"

namespace sw {

struct json_builder::impl {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w{sb};
};

json_builder::json_builder() : impl_(new impl) {
  impl_->w.StartObject();
}
json_builder::~json_builder() = default;

json_builder& json_builder::str(const char* key, std::string_view value) {
  impl_->w.Key(key);
  impl_->w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  return *this;
}
json_builder& json_builder::num(const char* key, std::int64_t value) {
  impl_->w.Key(key);
  impl_->w.Int64(value);
  return *this;
}
json_builder& json_builder::unum(const char* key, std::uint64_t value) {
  impl_->w.Key(key);
  impl_->w.Uint64(value);
  return *this;
}
json_builder& json_builder::dbl(const char* key, double value) {
  impl_->w.Key(key);
  impl_->w.Double(value);
  return *this;
}
json_builder& json_builder::boolean(const char* key, bool value) {
  impl_->w.Key(key);
  impl_->w.Bool(value);
  return *this;
}
json_builder& json_builder::null(const char* key) {
  impl_->w.Key(key);
  impl_->w.Null();
  return *this;
}
json_builder& json_builder::open(const char* key) {
  impl_->w.Key(key);
  impl_->w.StartObject();
  return *this;
}
json_builder& json_builder::open_dynamic(const std::string& key) {
  impl_->w.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()), true);
  impl_->w.StartObject();
  return *this;
}
json_builder& json_builder::num_dynamic(const std::string& key, std::int64_t value) {
  impl_->w.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()), true);
  impl_->w.Int64(value);
  return *this;
}
json_builder& json_builder::close() {
  impl_->w.EndObject();
  return *this;
}
std::string json_builder::done() {
  impl_->w.EndObject();
  return std::string(impl_->sb.GetString(), impl_->sb.GetSize());
}

std::string json_warning(std::string_view code, std::string_view message) {
  return json_builder().str("type", "warning").str("code", code).str("message", message).done();
}

std::string json_error_message(std::string_view code, std::string_view message) {
  return json_builder().str("type", "error").str("code", code).str("message", message).done();
}

std::string json_error_body(std::string_view error) {
  return json_builder().str("error", error).done();
}

std::string json_transcript(const room_transcript& t, std::int64_t ts_ms, bool legacy) {
  json_builder b;
  if (legacy) {
    return b.str("type", "transcription")
        .str("text", t.text)
        .boolean("is_final", t.is_final)
        .str("utterance_id", t.utterance_id)
        .str("speakerId", t.speaker_id)
        .str("speakerName", t.speaker_name)
        .num("ts", ts_ms)
        .done();
  }
  return b.str("type", t.is_final ? "transcript_final" : "transcript_partial")
      .str("sessionSlug", t.session_slug)
      .str("utteranceId", t.utterance_id)
      .str("text", t.text)
      .boolean("isFinal", t.is_final)
      .str("speaker", t.speaker_id)
      .str("speakerId", t.speaker_id)
      .str("speakerName", t.speaker_name)
      .str("language", t.language)
      .dbl("start", t.start)
      .dbl("end", t.end)
      .num("ts", ts_ms)
      .done();
}

client_message parse_client_message(std::string_view text) {
  client_message m;
  auto f = parse_json_object(text);
  if (!f.ok) return m;
  m.valid_json = true;
  m.type = f.get("type");
  m.identity = f.get("identity");
  m.name = f.get("name");
  m.timestamp = f.get_int("timestamp");
  return m;
}

json_fields parse_json_object(std::string_view text) {
  json_fields f;
  auto d = std::make_shared<rapidjson::Document>();
  if (!parse_json<rapidjson::kParseValidateEncodingFlag>(*d, text) || !d->IsObject()) return f;
  f.ok = true;
  f.doc = d;
  return f;
}

std::string json_fields::get(const char* key) const {
  if (!doc) return {};
  auto& d = *static_cast<rapidjson::Document*>(doc.get());
  auto it = d.FindMember(key);
  if (it == d.MemberEnd() || !it->value.IsString()) return {};
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

std::int64_t json_fields::get_int(const char* key) const {
  if (!doc) return 0;
  auto& d = *static_cast<rapidjson::Document*>(doc.get());
  auto it = d.FindMember(key);
  if (it == d.MemberEnd() || !it->value.IsNumber()) return 0;
  return static_cast<std::int64_t>(it->value.GetDouble());
}

}  // namespace sw
