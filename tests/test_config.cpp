#include <sched.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "config/config.hpp"

namespace {

sw::config load(std::map<std::string, std::string> env, bool dev = false) {
  if (!env.count("TRANSCRIPTION_JWT_SECRET") && !dev) env["TRANSCRIPTION_JWT_SECRET"] = "s";
  return sw::load_config(
      [&](const char* k) -> const char* {
        auto it = env.find(k);
        return it == env.end() ? nullptr : it->second.c_str();
      },
      dev);
}

std::string error_of(std::map<std::string, std::string> env) {
  try {
    load(std::move(env));
  } catch (const sw::config_error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, Defaults) {
  auto c = load({});
  EXPECT_EQ(c.port, 3001);
  EXPECT_EQ(c.host, "0.0.0.0");
  EXPECT_EQ(c.max_streams_per_room, 50u);
  EXPECT_EQ(c.max_streams_per_user, 5u);
  EXPECT_EQ(c.client_send_queue_bytes, 1024u * 1024u);
  EXPECT_EQ(c.ws_ping_interval.count(), 15000);
  EXPECT_EQ(c.ws_pong_timeout.count(), 45000);
  EXPECT_EQ(c.cors_allow_origin, "*");
  // One I/O thread per core this process may run on: its affinity mask, not the machine's core count.
  cpu_set_t mask;
  ASSERT_EQ(sched_getaffinity(0, sizeof mask, &mask), 0);
  EXPECT_EQ(c.io_threads, CPU_COUNT(&mask));
  cpu_set_t one;
  CPU_ZERO(&one);
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
    if (CPU_ISSET(cpu, &mask)) {
      CPU_SET(cpu, &one);
      break;
    }
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  auto pinned = load({});
  ASSERT_EQ(sched_setaffinity(0, sizeof mask, &mask), 0);
  EXPECT_EQ(pinned.io_threads, 1);
  EXPECT_EQ(load({{"IO_THREADS", "3"}}).io_threads, 3);
}

TEST(Config, SttRelayBounds) {
  auto c = load({});
  EXPECT_EQ(c.stt_ack_timeout.count(), 10000);
  EXPECT_EQ(c.stt_chunk_flush.count(), 100);
  auto set = load({{"STT_ACK_TIMEOUT_MS", "2500"}, {"STT_CHUNK_FLUSH_MS", "40"}, {"STT_REPLAY_BUFFER_BYTES", "64000"}});
  EXPECT_EQ(set.stt_ack_timeout.count(), 2500);
  EXPECT_EQ(set.stt_chunk_flush.count(), 40);
  EXPECT_EQ(set.stt_replay_buffer_bytes, 64000u);
  // PCM16: an odd bound would cut a sample in two
  auto odd = error_of({{"STT_REPLAY_BUFFER_BYTES", "64001"}});
  EXPECT_NE(odd.find("STT_REPLAY_BUFFER_BYTES=64001"), std::string::npos) << odd;
  EXPECT_NE(odd.find("even"), std::string::npos) << odd;
  EXPECT_NE(error_of({{"STT_ACK_TIMEOUT_MS", "0"}}), "");
}

// Overload is a stream's audio waiting unread; below 500 ms a chunk held in the kernel until it is whole would count.
TEST(Config, OverloadBacklogIsOffOrAtLeastHalfASecond) {
  EXPECT_EQ(load({}).overload_backlog.count(), 1000);
  EXPECT_EQ(load({{"OVERLOAD_BACKLOG_MS", "0"}}).overload_backlog.count(), 0);
  EXPECT_EQ(load({{"OVERLOAD_BACKLOG_MS", "500"}}).overload_backlog.count(), 500);
  auto low = error_of({{"OVERLOAD_BACKLOG_MS", "100"}});
  EXPECT_NE(low.find("OVERLOAD_BACKLOG_MS=100"), std::string::npos) << low;
  EXPECT_NE(low.find("at least 500"), std::string::npos) << low;
  EXPECT_NE(error_of({{"OVERLOAD_BACKLOG_MS", "-1"}}).find("OVERLOAD_BACKLOG_MS"), std::string::npos);
}

TEST(Config, ReadsValues) {
  auto c =
      load({{"PORT", "8080"}, {"MAX_STREAMS_PER_ROOM", "3"}, {"WS_PING_INTERVAL_MS", "100"}, {"HOST", "127.0.0.1"}});
  EXPECT_EQ(c.port, 8080);
  EXPECT_EQ(c.max_streams_per_room, 3u);
  EXPECT_EQ(c.ws_ping_interval.count(), 100);
  EXPECT_EQ(c.host, "127.0.0.1");
  EXPECT_EQ(load({}).audio_max_frames_per_second, 250u);
  EXPECT_EQ(load({{"AUDIO_MAX_FRAMES_PER_SECOND", "1000"}}).audio_max_frames_per_second, 1000u);
}

TEST(Config, BadValuesNameTheVariable) {
  for (auto [k, v] : std::map<std::string, std::string>{{"PORT", "abc"},
                                                        {"PORT", "70000"},
                                                        {"PORT", "-1"},
                                                        {"PORT", "80x"},
                                                        {"MAX_STREAMS", "0"},
                                                        {"AUDIO_MAX_FRAMES_PER_SECOND", "10"},
                                                        {"CLIENT_SEND_QUEUE_BYTES", "12"},
                                                        {"WS_PONG_TIMEOUT_MS", "soon"},
                                                        {"STT_PROVIDER", "whisper"},
                                                        {"LOCAL_STT_THREADS", "0"},
                                                        {"LOG_LEVEL", "loud"}}) {
    auto e = error_of({{k, v}});
    EXPECT_NE(e.find(k), std::string::npos) << k << "=" << v << " -> " << e;
  }
}

// LiveKit room transcription is configured by four variables together, or not at all.
TEST(Config, LiveKitSettingsGoTogetherAndAreChecked) {
  EXPECT_FALSE(load({}).livekit.configured());
  const std::map<std::string, std::string> all = {{"LIVEKIT_URL", "https://lk.example.com"},
                                                  {"LIVEKIT_API_KEY", "APIkey"},
                                                  {"LIVEKIT_API_SECRET", "secret"},
                                                  {"PUBLIC_BASE_URL", "wss://transcribe.example.com"},
                                                  {"SERVICE_API_SECRET", "svc"}};
  auto c = load(all);
  EXPECT_TRUE(c.livekit.configured());
  EXPECT_EQ(c.livekit.egress_mode, "track");
  EXPECT_EQ(c.livekit.reconcile_interval.count(), 30000);
  for (auto& [k, v] : all) {
    if (k == "SERVICE_API_SECRET") continue;
    auto some = all;
    some.erase(k);
    EXPECT_NE(error_of(some).find("LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET and PUBLIC_BASE_URL"),
              std::string::npos)
        << "without " << k;
  }
  auto no_service = all;
  no_service.erase("SERVICE_API_SECRET");
  EXPECT_NE(error_of(no_service).find("SERVICE_API_SECRET"), std::string::npos);
  for (auto [k, v] : std::map<std::string, std::string>{{"LIVEKIT_URL", "lk.example.com"},
                                                        {"PUBLIC_BASE_URL", "https://transcribe.example.com"},
                                                        {"LIVEKIT_EGRESS_MODE", "mix"},
                                                        {"RECONCILE_INTERVAL_MS", "10"}}) {
    auto bad = all;
    bad[k] = v;
    EXPECT_NE(error_of(bad).find(k), std::string::npos) << k << "=" << v;
  }
  auto room = all;
  room["LIVEKIT_EGRESS_MODE"] = "room";
  EXPECT_EQ(load(room).livekit.egress_mode, "room");
}

TEST(Config, TlsFilesGoTogether) {
  EXPECT_NE(error_of({{"TLS_CERT_FILE", "c.pem"}}).find("TLS_KEY_FILE"), std::string::npos);
}

TEST(Config, SecretIsRequiredUnlessDev) {
  EXPECT_THROW(sw::load_config([](const char*) -> const char* { return nullptr; }, false), sw::config_error);
  EXPECT_NO_THROW(sw::load_config([](const char*) -> const char* { return nullptr; }, true));
}

TEST(Config, UsageListsEverySetting) {
  auto text = sw::usage_text();
  for (auto& s : sw::settings()) EXPECT_NE(text.find(s.name), std::string::npos) << s.name;
}

// The configuration is documented three times: what the code reads, --help, and the README's table. They must
// name the same variables.
TEST(Config, ReadmeHelpAndCodeNameTheSameVariables) {
  auto names_in = [](const std::string& text, const std::regex& re) {
    std::set<std::string> names;
    for (std::sregex_iterator it(text.begin(), text.end(), re), end; it != end; ++it) names.insert((*it)[1].str());
    return names;
  };
  auto slurp = [](const std::string& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  auto readme = names_in(slurp(SESSIONS_WS_SOURCE_DIR "/README.md"), std::regex(R"re(\n\| `([A-Z][A-Z0-9_]+)` \|)re"));
  auto code = names_in(slurp(SESSIONS_WS_SOURCE_DIR "/config/config.cpp"),
                       std::regex(R"re((?:get|ms)\("([A-Z][A-Z0-9_]+)")re"));
  std::set<std::string> help;
  for (auto& s : sw::settings()) help.insert(s.name);
  EXPECT_GT(code.size(), 30u);
  EXPECT_EQ(readme, help);
  EXPECT_EQ(code, help);
  // every line of --help keeps the name apart from its meaning
  for (auto& s : sw::settings())
    EXPECT_NE(sw::usage_text().find("  " + std::string(s.name) + " "), std::string::npos) << s.name;
}

TEST(Binary, HelpExitsZeroAndBadPortExitsTwo) {
  EXPECT_EQ(std::system(SESSIONS_WS_BIN " --help > /dev/null"), 0);
  int rc = std::system("PORT=abc TRANSCRIPTION_JWT_SECRET=x " SESSIONS_WS_BIN " 2>/dev/null");
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  rc = std::system("env -u TRANSCRIPTION_JWT_SECRET " SESSIONS_WS_BIN " 2>/dev/null");
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 2);
  rc = std::system(SESSIONS_WS_BIN " --bogus 2>/dev/null");
  ASSERT_TRUE(WIFEXITED(rc));
  EXPECT_EQ(WEXITSTATUS(rc), 2);
}

}  // namespace
