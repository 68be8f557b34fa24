// Journal lines, as replay reads them after a crash or from a damaged disk: decoding never crashes, and what
// decodes encodes back to a line that decodes to the same row (its text as valid UTF-8: encoding repairs it).
#include <cstddef>
#include <cstdint>
#include <string>

#include "proto/journal_line.hpp"
#include "proto/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string line(reinterpret_cast<const char*>(data), size);
  sw::final_record f;
  if (sw::decode_journal_record(line, f)) {
    sw::final_record again;
    if (!sw::decode_journal_record(sw::encode_journal_record(f), again)) __builtin_trap();
    if (again.transcript.text != sw::valid_utf8(f.transcript.text) ||
        again.transcript.utterance_id != sw::valid_utf8(f.transcript.utterance_id))
      __builtin_trap();
  }
  sw::usage_record u;
  if (sw::decode_journal_record(line, u)) {
    sw::usage_record again;
    if (!sw::decode_journal_record(sw::encode_journal_record(u), again) || again.audio_chunks != u.audio_chunks)
      __builtin_trap();
  }
  return 0;
}
