#include "apps/audio_file.hpp"

#include <sndfile.h>
#include <soxr.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace sw {

namespace {

// libsndfile reading from memory (its virtual I/O).
struct memory_file {
  const unsigned char* data;
  sf_count_t size;
  sf_count_t at = 0;
};

sf_count_t vio_length(void* user) {
  return static_cast<memory_file*>(user)->size;
}
sf_count_t vio_seek(sf_count_t offset, int whence, void* user) {
  auto& m = *static_cast<memory_file*>(user);
  sf_count_t to = whence == SEEK_SET ? offset : whence == SEEK_CUR ? m.at + offset : m.size + offset;
  if (to < 0 || to > m.size) return -1;
  m.at = to;
  return m.at;
}
sf_count_t vio_read(void* out, sf_count_t n, void* user) {
  auto& m = *static_cast<memory_file*>(user);
  n = std::max<sf_count_t>(0, std::min(n, m.size - m.at));
  std::memcpy(out, m.data + m.at, static_cast<std::size_t>(n));
  m.at += n;
  return n;
}
sf_count_t vio_write(const void*, sf_count_t, void*) {
  return 0;
}
sf_count_t vio_tell(void* user) {
  return static_cast<memory_file*>(user)->at;
}

std::int16_t to_pcm16(float v) {
  if (!std::isfinite(v)) return 0;  // a NaN or infinity in a float file: silence, not an undefined cast
  v *= 32767.0f;
  return static_cast<std::int16_t>(v > 32767.0f ? 32767.0f : v < -32768.0f ? -32768.0f : v);
}

}  // namespace

std::vector<std::int16_t> decode_audio(const void* data, std::size_t size) {
  memory_file m{static_cast<const unsigned char*>(data), static_cast<sf_count_t>(size)};
  SF_VIRTUAL_IO io{vio_length, vio_seek, vio_read, vio_write, vio_tell};
  SF_INFO info{};
  SNDFILE* f = sf_open_virtual(&io, SFM_READ, &info, &m);
  if (!f) throw std::runtime_error(std::string("not an audio file libsndfile reads: ") + sf_strerror(nullptr));
  struct closer {
    SNDFILE* f;
    ~closer() { sf_close(f); }
  } close_it{f};
  if (info.channels < 1 || info.channels > 64) throw std::runtime_error("unsupported channel count");
  if (info.samplerate < 1000 || info.samplerate > 384'000) throw std::runtime_error("unsupported sample rate");
  if (info.frames < 0 ||
      static_cast<std::uint64_t>(info.frames) * static_cast<std::uint64_t>(info.channels) > max_audio_samples)
    throw std::runtime_error("audio longer than 10 minutes of 48 kHz stereo");
  std::vector<float> interleaved(static_cast<std::size_t>(info.frames) * static_cast<std::size_t>(info.channels));
  const auto got = std::max<sf_count_t>(0, sf_readf_float(f, interleaved.data(), info.frames));
  std::vector<float> mono(static_cast<std::size_t>(got));
  for (sf_count_t i = 0; i < got; ++i) {
    float sum = 0;
    for (int c = 0; c < info.channels; ++c) {
      float v = interleaved[static_cast<std::size_t>(i * info.channels + c)];
      sum += std::isfinite(v) ? v : 0.0f;
    }
    mono[static_cast<std::size_t>(i)] = sum / static_cast<float>(info.channels);
  }
  std::vector<float> out;
  if (info.samplerate != 16000 && !mono.empty()) {
    out.resize(static_cast<std::size_t>(static_cast<double>(mono.size()) * 16000.0 / info.samplerate) + 64);
    std::size_t done = 0;
    auto q = soxr_quality_spec(SOXR_HQ, 0);
    auto err = soxr_oneshot(info.samplerate, 16000, 1, mono.data(), mono.size(), nullptr, out.data(), out.size(), &done,
                            nullptr, &q, nullptr);
    if (err) throw std::runtime_error(std::string("resampling failed: ") + err);
    out.resize(done);
  } else {
    out = std::move(mono);
  }
  std::vector<std::int16_t> pcm(out.size());
  for (std::size_t i = 0; i < out.size(); ++i) pcm[i] = to_pcm16(out[i]);
  return pcm;
}

std::vector<std::int16_t> load_audio(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    return decode_audio(bytes.data(), bytes.size());
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

}  // namespace sw
