// The load tool's verdict: the sustain rule, and the runs that say nothing about the server (tool- or machine-bound).
#include <gtest/gtest.h>
#include <sched.h>

#include "loadgen/verdict.hpp"

namespace {

using sw::load::run_figures;

// Two /proc/stat readings 10 s apart (USER_HZ 100): cpu0 lost 2 s to the hypervisor, cpu1 0.1 s. The total line
// and the lines that are not CPUs are skipped; a kernel too old to count steal leaves its CPUs out.
const char* stat_before =
    "cpu  1731943 2892 503932 3863045 15187 0 150983 127620 0 0\n"
    "cpu0 856917 1350 228524 2004260 6413 0 43632 58649 0 0\n"
    "cpu1 875026 1541 275408 1858785 8774 0 107350 68971 0 0\n"
    "cpu2 1 2 3 4 5 6 7\n"
    "intr 123 4 5\nctxt 99\n";
const char* stat_after =
    "cpu  1731943 2892 503932 3863045 15187 0 150983 127830 0 0\n"
    "cpu0 856917 1350 228524 2004260 6413 0 43632 58849 0 0\n"
    "cpu1 875026 1541 275408 1858785 8774 0 107350 68981 0 0\n"
    "cpu2 1 2 3 4 5 6 7\n";

TEST(LoadgenVerdict, StealIsReadPerCpuFromProcStat) {
  auto t = sw::load::steal_ticks(stat_before);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0], 58649);
  EXPECT_EQ(t[1], 68971);
  EXPECT_TRUE(sw::load::steal_ticks("").empty());
}

TEST(LoadgenVerdict, StealIsAShareOfTheGivenCpusTime) {
  auto b = sw::load::steal_ticks(stat_before), a = sw::load::steal_ticks(stat_after);
  EXPECT_DOUBLE_EQ(sw::load::steal_share(b, a, {0}, 10, 100), 0.2);
  EXPECT_DOUBLE_EQ(sw::load::steal_share(b, a, {1}, 10, 100), 0.01);
  EXPECT_DOUBLE_EQ(sw::load::steal_share(b, a, {0, 1}, 10, 100), 0.105);
  EXPECT_EQ(sw::load::steal_share(b, a, {}, 10, 100), 0) << "no CPUs known";
  EXPECT_EQ(sw::load::steal_share(b, a, {2}, 10, 100), 0) << "a CPU without a steal figure";
  EXPECT_EQ(sw::load::steal_share(b, a, {0}, 0, 100), 0) << "no time";
}

TEST(LoadgenVerdict, ACpuSetIsTheProcesssAffinity) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  auto cpus = sw::load::cpus_of(0);
  EXPECT_EQ(static_cast<int>(cpus.size()), CPU_COUNT(&set));
  for (int c : cpus) EXPECT_TRUE(CPU_ISSET(c, &set)) << c;
  EXPECT_TRUE(sw::load::cpus_of(-1).empty()) << "no such process";
}

run_figures clean() {
  run_figures f;
  f.participants = f.connected = 100;
  f.have_upstream = true;
  f.relay_p99_ms = 3;
  f.lag_p99_ms = 0.2;
  return f;
}

TEST(LoadgenVerdict, TheSustainRule) {
  EXPECT_EQ(sw::load::judge(clean()), "sustained");
  auto f = clean();
  f.relay_p99_ms = 25;
  EXPECT_EQ(sw::load::judge(f), "not sustained: relay p99 above 20 ms");
  f = clean();
  f.connected = 99;
  f.lost = 3;
  f.errors = true;
  EXPECT_EQ(sw::load::judge(f), "not sustained: not every participant connected; 3 frames lost; errors");
  f = clean();
  f.lag_p99_ms = 7.5;
  EXPECT_EQ(sw::load::judge(f), "tool-bound (schedule lag p99 7.50 ms)");
}

// A fake upstream that falls behind its reads (here 1.8 s late at p99: it shares a core, and TLS to it costs it more
// than the load) fills its socket buffers, and the server's sends wait for it: the relay's latency is the tool's. Only
// the relay's timing is excused so; a slow fake with a good relay p99 is sustained, and a loss is never excused.
TEST(LoadgenVerdict, ARelayThatBrokeWhileTheFakeUpstreamReadLateIsToolBound) {
  auto f = clean();
  f.relay_p99_ms = 30'000;
  f.upstream_read_delay_p99_ms = 1'800;
  EXPECT_EQ(sw::load::judge(f), "tool-bound (the fake upstream read late: read delay p99 1800.00 ms)");
  f.upstream_read_delay_p99_ms = 5;  // at the bound, not over it
  EXPECT_EQ(sw::load::judge(f), "not sustained: relay p99 above 20 ms");
  f = clean();
  f.upstream_read_delay_p99_ms = 40;
  EXPECT_EQ(sw::load::judge(f), "sustained") << "the relay kept its time";
  f.relay_p99_ms = 30;
  f.lost = 2;
  EXPECT_EQ(sw::load::judge(f), "not sustained: 2 frames lost; relay p99 above 20 ms");
}

TEST(LoadgenVerdict, MissedTimingUnderStealIsMachineBound) {
  auto f = clean();
  f.relay_p99_ms = 40;
  f.steal_server = 0.20;
  f.steal_tool = 0.02;
  EXPECT_EQ(sw::load::judge(f),
            "machine-bound (the hypervisor took 20 % of the server's CPU time and 2 % of the tool's)");
  f = clean();
  f.lag_p99_ms = 30;
  f.steal_tool = 0.12;
  EXPECT_EQ(sw::load::judge(f).rfind("machine-bound", 0), 0u) << "the tool's own core was taken";
  f = clean();
  f.relay_p99_ms = 40;
  f.steal_server = 0.05;  // at the bound, not over it
  EXPECT_EQ(sw::load::judge(f), "not sustained: relay p99 above 20 ms");
}

TEST(LoadgenVerdict, StealExcusesNoLossNoErrorsAndNoPass) {
  auto f = clean();
  f.steal_server = f.steal_tool = 0.3;
  EXPECT_EQ(sw::load::judge(f), "sustained") << "a pass under steal is still a pass";
  f.relay_p99_ms = 40;
  f.lost = 1;
  EXPECT_EQ(sw::load::judge(f), "not sustained: 1 frames lost; relay p99 above 20 ms");
  f.lost = 0;
  f.errors = true;
  EXPECT_EQ(sw::load::judge(f), "not sustained: relay p99 above 20 ms; errors");
  f.errors = false;
  f.connected = 90;
  EXPECT_EQ(sw::load::judge(f).rfind("not sustained", 0), 0u);
}

}  // namespace
