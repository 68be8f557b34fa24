// The LibriVox recordings Debian's pocketsphinx package ships with their reference transcripts, and the recordings
// as LiveKit's egress sends audio (S16LE, 48 kHz, interleaved stereo), for the recognizer's and resampler's tests.
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <soxr.h>

namespace sw::test {

inline const std::string librivox = "/usr/share/pocketsphinx/test/data/librivox/";

// Recording id -> reference transcript (without <s> and </s>).
inline std::map<std::string, std::string> librivox_references() {
  std::map<std::string, std::string> refs;
  std::ifstream in(librivox + "transcription");
  for (std::string line; std::getline(in, line);) {
    auto open = line.rfind('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) continue;
    auto text = line.substr(0, open);
    for (std::string tag : {"<s>", "</s>"})
      if (auto p = text.find(tag); p != std::string::npos) text.erase(p, tag.size());
    refs[line.substr(open + 1, close - open - 1)] = text;
  }
  return refs;
}

inline std::string librivox_reference(const std::string& id) {
  auto refs = librivox_references();
  auto it = refs.find(id);
  return it == refs.end() ? std::string() : it->second;
}

// 16 kHz mono as LiveKit sends it: resampled to 48 kHz (libsoxr, very high quality), both channels the same.
inline std::string as_egress(const std::vector<std::int16_t>& mono16k) {
  std::vector<std::int16_t> up(mono16k.size() * 3 + 64);
  std::size_t done = 0;
  auto io = soxr_io_spec(SOXR_INT16_I, SOXR_INT16_I);
  auto q = soxr_quality_spec(SOXR_VHQ, 0);
  soxr_oneshot(16'000, 48'000, 1, mono16k.data(), mono16k.size(), nullptr, up.data(), up.size(), &done, &io, &q,
               nullptr);
  std::string out;
  out.reserve(done * 4);
  for (std::size_t i = 0; i < done; ++i)
    for (int ch = 0; ch < 2; ++ch) {
      out.push_back(static_cast<char>(static_cast<std::uint16_t>(up[i]) & 0xff));
      out.push_back(static_cast<char>(static_cast<std::uint16_t>(up[i]) >> 8));
    }
  return out;
}

}  // namespace sw::test
