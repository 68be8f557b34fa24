// What sessions-ws-loadgen concludes from a run: the sustain rule, and whether the run said anything about the
// server at all. A run can be starved by its own tool (its schedule slipped) or by the machine under both: on a VM
// the hypervisor takes CPU time from the guest ("steal", /proc/stat), and a server or tool that lost a fifth of its
// CPU's time in the window measured the neighbours, not itself.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace sw::load {

// The hypervisor's steal time of each CPU in a /proc/stat text, in clock ticks, by CPU number (its line's 8th
// figure). CPUs whose line has no steal figure are missing.
std::map<int, long long> steal_ticks(const std::string& proc_stat);

// The share of `cpus`' time over `seconds` the hypervisor took between two readings of steal_ticks (0 for no cpus,
// a CPU missing from either reading, or no time).
double steal_share(const std::map<int, long long>& before, const std::map<int, long long>& after,
                   const std::vector<int>& cpus, double seconds, double ticks_per_s);

// The CPUs a process may run on (sched_getaffinity; 0: this one); empty when it cannot be read.
std::vector<int> cpus_of(int pid);

// Over this share of stolen time on the server's or the tool's CPUs, a run that missed its timing is "machine-bound".
inline constexpr double max_steal = 0.05;

struct run_figures {
  int participants = 0, connected = 0;
  std::int64_t lost = 0;
  bool errors = false;
  bool have_upstream = false;
  double relay_p99_ms = 0;                  // the upstream's relay p99 (when have_upstream)
  double upstream_read_delay_p99_ms = 0;    // how late the fake upstream read what its kernel received, p99
  double lag_p99_ms = 0;                    // the tool's own schedule lag p99
  double steal_server = 0, steal_tool = 0;  // shares of their CPUs' time (steal_share)
};

// "sustained"; "not sustained: <what broke>; ..."; "tool-bound (...)" when the tool's schedule lag p99 is over 5 ms,
// or when the relay p99 over 20 ms is all that broke while the fake upstream read late (its read delay p99 over 5 ms:
// a fake that falls behind fills its socket's buffers, and the server's sends wait for it);
// "machine-bound (...)" when a run that missed its timing (tool-bound, or relay p99 over 20 ms and nothing else
// broken) lost more than max_steal of its CPUs' time to the hypervisor. Frames lost, errors and participants that
// never connected are never excused: they make a run "not sustained" whatever the machine did.
std::string judge(const run_figures& f);

}  // namespace sw::load
