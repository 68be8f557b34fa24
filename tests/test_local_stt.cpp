// The offline recognizer end to end: real recordings (pocketsphinx-testdata) through sessions-ws-stream and the
// running server; word error rate against the reference transcripts.
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>
#include <tuple>

#include <gtest/gtest.h>

#include "tests/support/harness.hpp"
#include "tests/support/librivox.hpp"
#include "tests/support/wer.hpp"

namespace {

using namespace std::chrono_literals;
using sw::test::expect_message;
using sw::test::field;
using sw::test::harness;

const std::string data = "/usr/share/pocketsphinx/test/data/librivox/";

std::unique_ptr<harness> local_harness(std::size_t max_streams = 4, std::size_t threads = 2) {
  return std::make_unique<harness>(
      [max_streams, threads](sw::config& c) {
        c.stt_provider = "local";
        c.local_stt_max_streams = max_streams;
        c.local_stt_threads = threads;
      },
      std::nullopt, true);
}

std::map<std::string, std::string> references() {
  return sw::test::librivox_references();
}

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[512];
  while (fgets(buf, sizeof buf, p)) out += buf;
  pclose(p);
  return out;
}

TEST(WordErrorRate, CountsSubstitutionsDeletionsAndInsertions) {
  EXPECT_DOUBLE_EQ(sw::test::wer("the cat sat", "the cat sat"), 0.0);
  EXPECT_DOUBLE_EQ(sw::test::wer("the cat sat", "the bat sat"), 1.0 / 3);
  EXPECT_DOUBLE_EQ(sw::test::wer("the cat sat", "the sat"), 1.0 / 3);
  EXPECT_DOUBLE_EQ(sw::test::wer("the cat sat", "the cat sat down"), 1.0 / 3);
  EXPECT_DOUBLE_EQ(sw::test::wer("The Cat, sat!", "the cat sat"), 0.0);
  EXPECT_DOUBLE_EQ(sw::test::wer("a b", ""), 1.0);
}

TEST(LocalStt, RealRecordingsAreTranscribedWithinTheMeasuredErrorRate) {
  auto h = local_harness();
  auto refs = references();
  ASSERT_EQ(refs.size(), 5u) << "pocketsphinx-testdata is missing (script/setup installs it)";
  std::size_t errors = 0, total = 0;
  for (auto& [id, ref] : refs) {
    auto out =
        run(std::string(SESSIONS_WS_STREAM_BIN) + " --fast --url ws://127.0.0.1:" + std::to_string(h->port) +
            " --secret " + sw::test::secret + " --room librivox --identity reader " + data + id + ".wav 2>/dev/null");
    std::string hyp;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind("[reader] ", 0) == 0) hyp += line.substr(9) + " ";
    auto r = sw::test::words(ref);
    auto e = sw::test::word_errors(r, sw::test::words(hyp));
    std::printf("%s\n  ref: %s\n  hyp: %s\n  %zu errors / %zu words\n", id.c_str(), ref.c_str(), hyp.c_str(), e,
                r.size());
    errors += e;
    total += r.size();
  }
  double wer = static_cast<double>(errors) / static_cast<double>(total);
  std::printf("word error rate over the five recordings: %.1f %%\n", wer * 100);
  // PocketSphinx's own batch decoder gets ~37 % wrong here; our streaming path (silence endpointing, 20 ms
  // frames) measured 34 % on this machine (24/71 words). Every stream starts from the model's initial cepstral
  // mean, as a new speaker would (31 % when a reused decoder kept its adaptation to this same reader). The bound
  // of 45 % leaves a margin over that and still fails on garbage, lost utterances or a broken resampler.
  EXPECT_LT(wer, 0.45);
}

TEST(LocalStt, LongSilenceProducesNoFinals) {
  auto h = local_harness();
  auto c = h->connect("quiet", "alice");
  expect_message(*c, "ready", 10000);
  std::vector<std::uint8_t> silence(640, 0);
  for (int i = 0; i < 250; ++i) c->send_binary(silence.data(), silence.size());  // 5 s
  c->send_text(R"({"type":"stop"})");
  int finals = 0;
  for (;;) {
    auto m = c->read(10s);
    if (m.kind != sw::net::ws_client::message::text) break;
    finals += field(m.data, "type") == "transcript_final";
  }
  EXPECT_EQ(finals, 0);
}

TEST(LocalStt, OverTheLimitAStreamGetsSttBusy) {
  auto h = local_harness(1);
  auto a = h->connect("room", "alice");
  expect_message(*a, "ready", 10000);
  auto b = h->connect("room", "bob");
  auto e = expect_message(*b, "\"error\"", 10000);
  EXPECT_EQ(field(e, "code"), "stt_busy");
  EXPECT_EQ(field(expect_message(*b, "stt_status"), "status"), "stopped");
  // the decoder returns to the pool when a stream ends
  a->send_text(R"({"type":"stop"})");
  EXPECT_EQ(sw::test::expect_close(*a, 10000), 1000);
  for (int i = 0; i < 50; ++i) {
    auto c = h->connect("room", "carol");
    auto m = expect_message(*c, "stt_status", 10000);
    if (field(m, "status") == "connecting") m = expect_message(*c, "stt_status", 10000);
    if (field(m, "status") == "ready") return;
    std::this_thread::sleep_for(50ms);
  }
  FAIL() << "the decoder was not returned to the pool";
}

void two_concurrent_streams(std::size_t threads) {
  auto h = local_harness(4, threads);
  auto run_one = [&](const std::string& who, const std::string& file) {
    return run(std::string(SESSIONS_WS_STREAM_BIN) + " --fast --url ws://127.0.0.1:" + std::to_string(h->port) +
               " --secret " + sw::test::secret + " --room shared --identity " + who + " " + data + file +
               " 2>/dev/null");
  };
  std::string out_a, out_b;
  std::thread ta([&] { out_a = run_one("anne", "sense_and_sensibility_01_austen_64kb-0880.wav"); });
  std::thread tb([&] { out_b = run_one("bert", "sense_and_sensibility_01_austen_64kb-0930.wav"); });
  ta.join();
  tb.join();
  // Each stream's words come back attributed to its own speaker (a client may close before the other
  // speaker's last final, so only the own speaker is required in each output).
  auto said = [](const std::string& out, const std::string& who) {
    std::string text;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind("[" + who + "] ", 0) == 0) text += line.substr(who.size() + 3) + " ";
    return text;
  };
  const std::string anne_ref = "he was not an ill disposed young man",
                    bert_ref = "he might even have been made amiable himself";
  auto anne = said(out_a, "anne"), bert = said(out_b, "bert");
  ASSERT_FALSE(anne.empty()) << out_a;
  ASSERT_FALSE(bert.empty()) << out_b;
  EXPECT_LT(sw::test::wer(anne_ref, anne), sw::test::wer(bert_ref, anne)) << "anne's line: " << anne;
  EXPECT_LT(sw::test::wer(bert_ref, bert), sw::test::wer(anne_ref, bert)) << "bert's line: " << bert;
  // and whatever one client heard of the other is attributed to the other
  for (auto& [out, other, ref] : {std::tuple{out_a, "bert", bert_ref}, std::tuple{out_b, "anne", anne_ref}}) {
    auto heard = said(out, other);
    if (!heard.empty()) {
      EXPECT_LT(sw::test::wer(ref, heard), 1.0) << heard;
    }
  }
}

TEST(LocalStt, TwoConcurrentStreamsAreAttributedToTheirSpeakers) {
  two_concurrent_streams(2);
}

// One decoding thread: both streams' decoders share one language model and take turns on it; each stream must
// still get its own words.
TEST(LocalStt, TwoStreamsTakingTurnsOnOneLanguageModelKeepTheirOwnWords) {
  two_concurrent_streams(1);
}

TEST(LocalStt, AReusedDecoderHearsARecordingAsAFreshOneDoes) {
  auto h = local_harness(1, 1);  // one decoder: every stream reuses it
  auto stream = [&](const std::string& file) {
    auto out = run(std::string(SESSIONS_WS_STREAM_BIN) + " --fast --url ws://127.0.0.1:" + std::to_string(h->port) +
                   " --secret " + sw::test::secret + " --room r --identity reader " + data + file + " 2>/dev/null");
    std::string finals;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);)
      if (line.rfind("[reader] ", 0) == 0) finals += line + "\n";
    return finals;
  };
  auto first = stream("sense_and_sensibility_01_austen_64kb-0870.wav");
  ASSERT_FALSE(first.empty());
  stream("sense_and_sensibility_01_austen_64kb-0880.wav");  // another speaker's audio adapts the decoder
  EXPECT_EQ(stream("sense_and_sensibility_01_austen_64kb-0870.wav"), first);
}

TEST(LocalStt, StopDrainsTheLastUtterance) {
  auto h = local_harness();
  // The recording ends right after the last word: its final can only come from the drain on stop.
  auto out = run(std::string(SESSIONS_WS_STREAM_BIN) + " --fast --url ws://127.0.0.1:" + std::to_string(h->port) +
                 " --secret " + sw::test::secret + " --room r --identity reader " + data +
                 "sense_and_sensibility_01_austen_64kb-0930.wav 2>/dev/null; echo exit=$?");
  EXPECT_NE(out.find("[reader] "), std::string::npos) << out;
  EXPECT_NE(out.find("exit=0"), std::string::npos) << out;
}

}  // namespace
