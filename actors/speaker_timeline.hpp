// A room's active-speaker reports as a timeline of changes, bounded in entries and in age, and attribution of a
// wall-clock span to the speaker with the largest overlap. A report holds until the next one (the last one until
// the span ends); reports may come out of order and are kept sorted by their timestamps.
#pragma once

#include <cstdint>
#include <optional>

#include <boost/container/deque.hpp>

#include "proto/messages.hpp"

namespace sw {

class speaker_timeline {
public:
  explicit speaker_timeline(std::size_t max_entries = 1024, std::int64_t max_age_ms = 30 * 60 * 1000)
      : max_entries_(max_entries), max_age_ms_(max_age_ms) {}

  void add(active_speaker_update u);
  // The speaker who holds the largest part of [from_ms, to_ms] (the earliest of equals); none when nobody was
  // reported speaking in it. An empty span counts the speaker at from_ms.
  std::optional<active_speaker_update> attribute(std::int64_t from_ms, std::int64_t to_ms) const;
  const active_speaker_update* latest() const { return changes_.empty() ? nullptr : &changes_.back(); }
  std::size_t size() const { return changes_.size(); }

private:
  std::size_t max_entries_;
  std::int64_t max_age_ms_;
  boost::container::deque<active_speaker_update> changes_;  // by timestamp
};

}  // namespace sw
