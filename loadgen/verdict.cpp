#include "loadgen/verdict.hpp"

#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace sw::load {

std::map<int, long long> steal_ticks(const std::string& proc_stat) {
  std::map<int, long long> out;
  std::istringstream in(proc_stat);
  for (std::string line; std::getline(in, line);) {
    // "cpuN user nice system idle iowait irq softirq steal ..." (the "cpu " total line has no number)
    if (line.size() < 4 || line.compare(0, 3, "cpu") != 0 || line[3] < '0' || line[3] > '9') continue;
    std::istringstream fields(line.substr(3));
    int cpu = -1;
    long long v = 0, steal = -1;
    if (!(fields >> cpu)) continue;
    for (int i = 1; i <= 8 && fields >> v; ++i)
      if (i == 8) steal = v;
    if (cpu >= 0 && steal >= 0) out[cpu] = steal;
  }
  return out;
}

double steal_share(const std::map<int, long long>& before, const std::map<int, long long>& after,
                   const std::vector<int>& cpus, double seconds, double ticks_per_s) {
  if (cpus.empty() || seconds <= 0 || ticks_per_s <= 0) return 0;
  long long ticks = 0;
  for (int c : cpus) {
    auto b = before.find(c), a = after.find(c);
    if (b == before.end() || a == after.end()) return 0;
    ticks += std::max(0LL, a->second - b->second);
  }
  return static_cast<double>(ticks) / ticks_per_s / (seconds * static_cast<double>(cpus.size()));
}

std::vector<int> cpus_of(int pid) {
  std::vector<int> out;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(pid, sizeof set, &set) != 0) return out;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}

namespace {
std::string fixed(double v, int decimals) {
  char b[32];
  std::snprintf(b, sizeof b, "%.*f", decimals, v);
  return b;
}
}  // namespace

std::string judge(const run_figures& f) {
  std::vector<std::string> broken;
  bool timing_only = true;  // nothing broken but the relay's p99
  if (f.connected < f.participants) broken.push_back("not every participant connected"), timing_only = false;
  if (f.lost != 0) broken.push_back(std::to_string(f.lost) + " frames lost"), timing_only = false;
  if (f.have_upstream && f.relay_p99_ms > 20) broken.push_back("relay p99 above 20 ms");
  if (f.errors) broken.push_back("errors"), timing_only = false;
  // The relay's timing alone broke, while the fake upstream read late: its own doing (nothing lost or failed is).
  const bool upstream_behind =
      timing_only && f.have_upstream && f.relay_p99_ms > 20 && f.upstream_read_delay_p99_ms > 5 && f.lag_p99_ms <= 5;
  const bool tool_bound = f.lag_p99_ms > 5 || upstream_behind;
  const double steal = std::max(f.steal_server, f.steal_tool);
  if (steal > max_steal && timing_only && (tool_bound || !broken.empty()))
    return "machine-bound (the hypervisor took " + fixed(f.steal_server * 100, 0) + " % of the server's CPU time and " +
           fixed(f.steal_tool * 100, 0) + " % of the tool's)";
  if (upstream_behind)
    return "tool-bound (the fake upstream read late: read delay p99 " + fixed(f.upstream_read_delay_p99_ms, 2) + " ms)";
  if (tool_bound) return "tool-bound (schedule lag p99 " + fixed(f.lag_p99_ms, 2) + " ms)";
  if (broken.empty()) return "sustained";
  std::string verdict = "not sustained:";
  for (auto& b : broken) verdict += " " + b + ";";
  verdict.pop_back();
  return verdict;
}

}  // namespace sw::load
