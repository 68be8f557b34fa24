// The service's log: one event, one line, whatever a line quotes.
#include <iostream>
#include <sstream>

#include <gtest/gtest.h>

#include "telemetry/log.hpp"

namespace {

TEST(Log, ControlCharactersAreEscapedSoALineStaysOneLine) {
  EXPECT_EQ(sw::one_line("stream 1 open: room=demo identity=alice"), "stream 1 open: room=demo identity=alice");
  EXPECT_EQ(sw::one_line("room=r\x1b[2J"), "room=r\\x1b[2J");
  EXPECT_EQ(sw::one_line("a\nb\tc\rd\x7f"), "a\\nb\\tc\\x0dd\\x7f");
  EXPECT_EQ(sw::one_line("csi \xc2\x9b"
                         "31m"),
            "csi \\u009b31m");
  EXPECT_EQ(sw::one_line("caf\xc3\xa9 \xc2\xa0 \xe2\x82\xac"), "caf\xc3\xa9 \xc2\xa0 \xe2\x82\xac");  // text as it is
  EXPECT_EQ(sw::one_line("cut \xc2"), "cut \xc2");
}

// What reaches stderr: a room from a token with a newline and an escape sequence cannot forge a second line.
TEST(Log, AWrittenLineCannotForgeAnother) {
  std::ostringstream captured;
  auto* old = std::cerr.rdbuf(captured.rdbuf());
  sw::logger log("info");
  log.write(sw::log_level::warn, "room=r\n2026-12-05T00:00:00.000Z error forged\x1b]0;x\x07");
  std::cerr.rdbuf(old);
  const auto out = captured.str();
  EXPECT_EQ(out.find('\n'), out.size() - 1) << out;
  EXPECT_NE(out.find(" warn room=r\\n2026-12-05T00:00:00.000Z error forged\\x1b]0;x\\x07\n"), std::string::npos) << out;
}

}  // namespace
