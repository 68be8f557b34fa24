#include "proto/journal_line.hpp"

#include "proto/json.hpp"
#include "proto/rapidjson.hpp"

namespace sw {

std::string encode_journal_record(const final_record& f) {
  const auto& t = f.transcript;
  return json_builder()
      .str("slug", t.session_slug)
      .str("utt", t.utterance_id)
      .str("text", t.text)
      .str("spk", t.speaker_id)
      .str("name", t.speaker_name)
      .str("lang", t.language)
      .dbl("start", t.start)
      .dbl("end", t.end)
      .str("sid", f.session_id)
      .num("t0", f.stream_started_ms)
      .done();
}

bool decode_journal_record(std::string_view json, final_record& f) {
  rapidjson::Document d;
  if (!parse_json(d, json) || !d.IsObject()) return false;
  auto& t = f.transcript;
  t.session_slug = json_string(d, "slug");
  t.utterance_id = json_string(d, "utt");
  t.text = json_string(d, "text");
  t.speaker_id = json_string(d, "spk");
  t.speaker_name = json_string(d, "name");
  t.language = json_string(d, "lang");
  t.start = json_number(d, "start");
  t.end = json_number(d, "end");
  t.is_final = true;
  f.session_id = json_string(d, "sid");
  f.stream_started_ms = json_int64(d, "t0");
  return !t.session_slug.empty() && !t.utterance_id.empty();
}

std::string encode_journal_record(const usage_record& u) {
  return json_builder()
      .str("slug", u.session_slug)
      .str("sid", u.session_id)
      .str("ident", u.identity)
      .num("s", u.started_ms)
      .num("e", u.ended_ms)
      .unum("chunks", u.audio_chunks)
      .unum("tr", u.transcripts)
      .unum("fin", u.finals)
      .unum("par", u.partials)
      .unum("err", u.errors)
      .done();
}

bool decode_journal_record(std::string_view json, usage_record& u) {
  rapidjson::Document d;
  if (!parse_json(d, json) || !d.IsObject()) return false;
  u.session_slug = json_string(d, "slug");
  u.session_id = json_string(d, "sid");
  u.identity = json_string(d, "ident");
  u.started_ms = json_int64(d, "s");
  u.ended_ms = json_int64(d, "e");
  u.audio_chunks = json_count(d, "chunks");
  u.transcripts = json_count(d, "tr");
  u.finals = json_count(d, "fin");
  u.partials = json_count(d, "par");
  u.errors = json_count(d, "err");
  return !u.session_slug.empty();
}

}  // namespace sw
