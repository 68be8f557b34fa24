// What Gladia (or anything posing as it) sends: decoding never crashes, an ack it accepts has finite offsets, and the
// same bytes read by their length and as a string up to its NUL give the same message. The same bytes as an answer
// to GET /v2/live/{id} (the session's result) decode to finite utterance times.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "proto/gladia_message.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto m = sw::parse_gladia_message(bytes);
  auto t = sw::parse_gladia_message(std::string(bytes));
  if (t.what != m.what || t.type != m.type || t.ack_start != m.ack_start || t.ack_end != m.ack_end ||
      t.transcript.text != m.transcript.text || t.transcript.utterance_id != m.transcript.utterance_id ||
      t.transcript.is_final != m.transcript.is_final || t.transcript.start != m.transcript.start ||
      t.transcript.end != m.transcript.end || t.transcript.language != m.transcript.language)
    __builtin_trap();
  if (m.what == sw::gladia_message::kind::ack && !std::isfinite(m.ack_end)) __builtin_trap();
  if (m.what == sw::gladia_message::kind::transcript && !std::isfinite(m.transcript.start)) __builtin_trap();
  if (t.utterances.size() != m.utterances.size()) __builtin_trap();
  auto finite = [](const std::vector<sw::stt_transcript>& us) {
    for (auto& u : us)
      if (!std::isfinite(u.start) || !std::isfinite(u.end) || !u.is_final) return false;
    return true;
  };
  if (!finite(m.utterances)) __builtin_trap();
  auto r = sw::parse_gladia_result(bytes);
  if (!finite(r.utterances) || (r.status.empty() && !r.utterances.empty())) __builtin_trap();
  return 0;
}
