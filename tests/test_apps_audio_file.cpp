// Audio files for sessions-ws-stream: any rate and channel count in, 16 kHz PCM16 mono out; hostile values bounded.
#include <sndfile.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

#include "apps/audio_file.hpp"

namespace {

std::string write_float_wav(const std::vector<float>& samples, int rate, int channels) {
  auto path = (std::filesystem::temp_directory_path() / ("sw-audio-" + std::to_string(::getpid()) + ".wav")).string();
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = channels;
  info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  EXPECT_NE(f, nullptr) << sf_strerror(nullptr);
  sf_writef_float(f, samples.data(), static_cast<sf_count_t>(samples.size() / channels));
  sf_close(f);
  return path;
}

TEST(AudioFile, StereoIsDownmixedAndResampledTo16k) {
  std::vector<float> stereo(48'000 * 2);
  for (std::size_t i = 0; i < stereo.size(); ++i) stereo[i] = 0.25f * std::sin(static_cast<float>(i / 2) / 10.0f);
  auto path = write_float_wav(stereo, 48'000, 2);
  auto pcm = sw::load_audio(path);
  std::remove(path.c_str());
  EXPECT_NEAR(static_cast<double>(pcm.size()), 16'000.0, 64.0);
}

// A float file may hold NaN or infinity: silence, never an undefined conversion.
TEST(AudioFile, NotANumberIsSilence) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  auto path = write_float_wav({nan, inf, -inf, 0.5f}, 16'000, 1);
  auto pcm = sw::load_audio(path);
  std::remove(path.c_str());
  ASSERT_EQ(pcm.size(), 4u);
  EXPECT_EQ(pcm[0], 0);
  EXPECT_EQ(pcm[1], 0);
  EXPECT_EQ(pcm[2], 0);
  EXPECT_EQ(pcm[3], 16'383);
}

TEST(AudioFile, WhatIsNotAudioIsAClearError) {
  const char junk[] = "RIFF\x10\0\0\0WAVEjunkjunkjunk";
  EXPECT_THROW(sw::decode_audio(junk, sizeof junk), std::runtime_error);
  EXPECT_THROW(sw::decode_audio("", 0), std::runtime_error);
  EXPECT_THROW(sw::load_audio("/nonexistent.wav"), std::runtime_error);
}

}  // namespace
