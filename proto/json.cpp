#include "proto/json.hpp"

#include "proto/rapidjson.hpp"

namespace sw {

namespace {

// The text as valid UTF-8: every byte that does not start a well-formed sequence (RFC 3629: no overlong forms, no
// surrogates, nothing past U+10FFFF) becomes U+FFFD. What clients send (a lone "\udc00" that the parser decoded,
// a path with %ff) is echoed in warnings and error bodies; a text frame or body that is not UTF-8 makes browsers
// drop the connection.
bool needs_repair(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return true;  // the common case, ASCII, is a single scan
  return false;
}

std::size_t sequence_length(std::string_view s, std::size_t i) {
  auto at = [&](std::size_t k) { return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0; };
  auto cont = [&](std::size_t k) { return (at(k) & 0xC0) == 0x80; };
  const unsigned char c = at(0);
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    const unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;  // no overlong, no surrogate
    return at(1) >= lo && at(1) <= hi && cont(2) ? 3 : 0;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    const unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;  // U+10000 .. U+10FFFF
    return at(1) >= lo && at(1) <= hi && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

std::string repaired(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (std::size_t i = 0; i < s.size();) {
    if (auto n = sequence_length(s, i)) {
      out.append(s.data() + i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

}  // namespace

std::size_t control_at(std::string_view s, std::size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x20 || b == 0x7f) return 1;
  if (b == 0xc2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) <= 0x9f &&
      static_cast<unsigned char>(s[i + 1]) >= 0x80)
    return 2;
  return 0;
}

std::string excerpt(std::string_view text, std::size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  std::size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xc0) == 0x80) --cut;  // not inside a character
  return std::string(text.substr(0, cut)) + "…";
}

bool is_utf8(std::string_view s) {
  if (!needs_repair(s)) return true;
  for (std::size_t i = 0; i < s.size();) {
    const auto n = sequence_length(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string valid_utf8(std::string_view s) {
  return needs_repair(s) ? repaired(s) : std::string(s);
}

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
  if (needs_repair(value)) {
    auto v = repaired(value);
    impl_->w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()), true);
  } else {
    impl_->w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  }
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
json_builder& json_builder::open_dynamic(const std::string& raw) {
  auto key = valid_utf8(raw);
  impl_->w.Key(key.data(), static_cast<rapidjson::SizeType>(key.size()), true);
  impl_->w.StartObject();
  return *this;
}
json_builder& json_builder::num_dynamic(const std::string& raw, std::int64_t value) {
  auto key = valid_utf8(raw);
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

std::optional<bool> parse_egress_muted(std::string_view text) {
  rapidjson::Document d;
  if (!parse_json(d, text) || !d.IsObject()) return std::nullopt;
  auto it = d.FindMember("muted");
  if (it == d.MemberEnd() || !it->value.IsBool()) return std::nullopt;
  return it->value.GetBool();
}

std::string json_fields::get(const char* key) const {
  return doc ? json_string(*static_cast<rapidjson::Document*>(doc.get()), key) : std::string();
}

std::int64_t json_fields::get_int(const char* key) const {
  return doc ? json_whole(*static_cast<rapidjson::Document*>(doc.get()), key) : 0;
}

}  // namespace sw
