#include "proto/gladia_message.hpp"

#include "proto/rapidjson.hpp"

namespace sw {

namespace {

stt_transcript utterance_of(const rapidjson::Value& u) {
  stt_transcript t;
  t.is_final = true;
  t.text = json_string(u, "text");
  t.language = json_string(u, "language");
  t.start = json_number(u, "start");
  t.end = json_number(u, "end");
  return t;
}

// A transcription object's `utterances` (post_transcript's data, GET's result.transcription): objects only.
std::vector<stt_transcript> utterances_of(const rapidjson::Value& transcription) {
  std::vector<stt_transcript> out;
  auto list = transcription.FindMember("utterances");
  if (list == transcription.MemberEnd() || !list->value.IsArray()) return out;
  for (auto& u : list->value.GetArray())
    if (u.IsObject()) out.push_back(utterance_of(u));
  return out;
}

gladia_message parse(json_text text) {
  gladia_message m;
  scratch_document doc;
  auto& d = *doc;
  if (!parse_json(d, text) || !d.IsObject()) return m;
  auto type = d.FindMember("type");
  if (type == d.MemberEnd() || !type->value.IsString()) return m;
  m.type.assign(type->value.GetString(), type->value.GetStringLength());
  auto data_it = d.FindMember("data");
  const rapidjson::Value* data = data_it != d.MemberEnd() && data_it->value.IsObject() ? &data_it->value : nullptr;
  m.what = gladia_message::kind::known;
  if (m.type == "transcript") {
    if (!data) return m;
    auto u = data->FindMember("utterance");
    if (u == data->MemberEnd() || !u->value.IsObject()) return m;
    auto& t = m.transcript;
    t.utterance_id = json_string(*data, "id");
    auto fin = data->FindMember("is_final");
    t.is_final = fin != data->MemberEnd() && fin->value.IsBool() && fin->value.GetBool();
    t.text = json_string(u->value, "text");
    t.language = json_string(u->value, "language");
    t.start = json_number(u->value, "start");
    t.end = json_number(u->value, "end");
    m.what = gladia_message::kind::transcript;
  } else if (m.type == "audio_chunk") {
    if (!data) return m;
    auto range = data->FindMember("byte_range");
    if (range == data->MemberEnd() || !range->value.IsArray() || range->value.Size() != 2) return m;
    auto& r = range->value;
    if (!r[1].IsNumber() || !std::isfinite(r[1].GetDouble())) return m;
    m.ack_end = r[1].GetDouble();
    if (r[0].IsNumber() && std::isfinite(r[0].GetDouble())) m.ack_start = r[0].GetDouble();
    m.what = gladia_message::kind::ack;
  } else if (m.type == "stop_recording") {
    m.what = gladia_message::kind::stop_ack;
    auto ack = d.FindMember("acknowledged");
    m.acknowledged = ack != d.MemberEnd() && ack->value.IsBool() && ack->value.GetBool();
  } else if (m.type == "post_final_transcript") {
    m.what = gladia_message::kind::post_final;
  } else if (m.type == "post_transcript") {
    m.what = gladia_message::kind::post_transcript;
    if (data) m.utterances = utterances_of(*data);
  } else if (m.type != "speech_start" && m.type != "speech_end" && m.type != "start_session" &&
             m.type != "start_recording" && m.type != "end_recording" && m.type != "end_session") {
    m.what = gladia_message::kind::unknown;
  }
  return m;
}

}  // namespace

gladia_result parse_gladia_result(std::string_view body) {
  gladia_result r;
  scratch_document doc;
  auto& d = *doc;
  if (!parse_json(d, body) || !d.IsObject()) return r;
  r.status = json_string(d, "status");
  if (r.status.empty()) return r;
  auto result = d.FindMember("result");
  if (result == d.MemberEnd() || !result->value.IsObject()) return r;
  auto transcription = result->value.FindMember("transcription");
  if (transcription != result->value.MemberEnd() && transcription->value.IsObject())
    r.utterances = utterances_of(transcription->value);
  return r;
}

gladia_message parse_gladia_message(const std::string& text) {
  return parse(text);
}
gladia_message parse_gladia_message(std::string_view text) {
  return parse(text);
}

}  // namespace sw
