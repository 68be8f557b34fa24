// The cost of reading Gladia's messages on the relay: parse_gladia_message (RapidJSON into a scratch document, the
// depth bound, the fields the relay keeps) on an ack (one a chunk, ten a second per participant), a partial and a
// 40-word final as Gladia live v2 sends them. Reports CPU (this thread's) per message.
#include <time.h>

#include <cstdio>
#include <string>

#include "proto/gladia_message.hpp"

namespace {

double thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

volatile double sink = 0;  // keeps the parses from being optimized away

const std::string head =
    R"({"session_id":"4a39145c-2844-4557-8f34-34883f7be7d9","created_at":"2026-12-03T10:00:00.123Z",)";

}  // namespace

int main() {
  std::string words;
  for (int i = 0; i < 40; ++i)
    words += std::string(i ? "," : "") + R"({"word":" word)" + std::to_string(i) + R"(","start":)" + std::to_string(i) +
             R"(.25,"end":)" + std::to_string(i) + R"(.5,"confidence":0.93})";
  const struct {
    const char* name;
    std::string text;
  } cases[] = {
      {"ack", head + R"("type":"audio_chunk","acknowledged":true,"error":null,"data":{"byte_range":[316800,320000],)"
                     R"("time_range":[9.9,10.0]}})"},
      {"partial", head + R"("type":"transcript","data":{"id":"00_00000012","is_final":false,"utterance":{"start":)"
                         R"(8.25,"end":9.75,"confidence":0.9,"channel":0,"words":[],"text":"he was not an ill )"
                         R"(disposed young man","language":"en"}}})"},
      {"40-word final", head +
                            R"("type":"transcript","data":{"id":"00_00000012","is_final":true,"utterance":{)"
                            R"("text":"forty words of a long utterance","start":0.25,"end":39.5,"confidence":0.93,)"
                            R"("channel":0,"language":"en","words":[)" +
                            words + "]}}}"},
  };
  constexpr int rounds = 200'000;
  std::printf("%-14s %6s %10s\n", "message", "bytes", "ns each");
  for (const auto& c : cases) {
    double checksum = 0;
    for (int i = 0; i < rounds / 10; ++i) checksum += sw::parse_gladia_message(c.text).ack_end;  // warm up
    const double start = thread_cpu_ns();
    for (int i = 0; i < rounds; ++i) checksum += sw::parse_gladia_message(c.text).ack_end;
    const double each = (thread_cpu_ns() - start) / rounds;
    sink = checksum;
    std::printf("%-14s %6zu %10.0f\n", c.name, c.text.size(), each);
  }
}
