#include "actors/speaker_timeline.hpp"

#include <algorithm>
#include <map>

namespace sw {

void speaker_timeline::add(active_speaker_update u) {
  auto at = std::upper_bound(changes_.begin(), changes_.end(), u.timestamp_ms,
                             [](std::int64_t t, const active_speaker_update& c) { return t < c.timestamp_ms; });
  changes_.insert(at, std::move(u));
  const auto newest = changes_.back().timestamp_ms;
  // Keep the one change before the age limit: it says who was speaking when the kept window begins.
  while (changes_.size() > max_entries_ || (changes_.size() > 1 && newest - changes_[1].timestamp_ms > max_age_ms_))
    changes_.pop_front();
}

std::optional<active_speaker_update> speaker_timeline::attribute(std::int64_t from_ms, std::int64_t to_ms) const {
  if (to_ms < from_ms) std::swap(from_ms, to_ms);
  if (to_ms == from_ms) ++to_ms;
  std::map<std::string, std::int64_t> held;  // identity -> ms within the span
  const active_speaker_update* best = nullptr;
  std::int64_t best_ms = 0;
  for (std::size_t i = 0; i < changes_.size(); ++i) {
    const auto& c = changes_[i];
    if (c.identity.empty()) continue;
    const std::int64_t begin = std::max(c.timestamp_ms, from_ms);
    const std::int64_t end = std::min(i + 1 < changes_.size() ? changes_[i + 1].timestamp_ms : to_ms, to_ms);
    if (end <= begin) continue;
    auto& ms = held[c.identity];
    ms += end - begin;
    if (ms > best_ms) {
      best_ms = ms;
      best = &c;
    }
  }
  if (!best) return std::nullopt;
  return *best;
}

}  // namespace sw
