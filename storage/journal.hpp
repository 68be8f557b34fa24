// The local journal of accepted finals and usage rows: appended (and fsync'd at least every 100 ms) before a
// final counts as accepted, retired once its batch committed, replayed at start-up. Text lines:
//   F <seq> <json final_record>   U <seq> <json usage_record>   R <seq> (retired)
// in segment files `rows.<n>.journal` (rows for the database: finals and usage), appended to the newest and rotated
// past a size. The oldest segment is deleted once nothing in it is live; when at most half of it is, its live lines are
// first carried forward into the newest (same seq), so one row that waits long (a parked final) never keeps the journal
// from shrinking. Segments go oldest first: an R line is always in the segment of its entry or a newer one.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "proto/messages.hpp"

namespace sw {

class journal {
public:
  struct entry {
    std::uint64_t seq = 0;
    bool is_final = true;
    final_record final;
    usage_record usage;
  };

  // Opens (creating the directory), reads what is live and starts a new segment. Throws std::runtime_error.
  explicit journal(const std::string& dir, std::size_t segment_bytes = 4 * 1024 * 1024);
  ~journal();
  journal(const journal&) = delete;
  journal& operator=(const journal&) = delete;

  // Entries found live at open, in order.
  const std::vector<entry>& recovered() const { return recovered_; }
  std::uint64_t append(const final_record& f);
  std::uint64_t append(const usage_record& u);
  void retire(const std::vector<std::uint64_t>& seqs);
  // Flushes to disk if anything was written since the last sync.
  void sync();
  std::size_t live() const { return where_.size(); }
  // Live entries with seq > after (for reloading rows that did not fit in memory); reads only the segments that
  // hold such entries.
  std::vector<entry> read_live(std::uint64_t after, std::size_t max);
  std::size_t segments() const { return segments_.size(); }
  std::uint64_t bytes() const;  // on disk, all segments

private:
  struct segment {
    std::uint64_t id = 0;
    std::string path;
    std::uint64_t bytes = 0;
    std::size_t entries = 0;  // F/U lines
    std::size_t live = 0;     // of them, live here (not retired, not carried forward)
    std::uint64_t max_seq = 0;
  };
  std::string path_of(std::uint64_t id) const;
  void open_segment();  // a new newest segment, appended to from now on
  void write_line(const std::string& line);
  std::uint64_t append_entry(char kind, const std::string& json);
  void rotate_if_full();
  void collect();  // deletes (or carries forward, then deletes) the oldest segments while it can
  std::string dir_;
  std::size_t segment_bytes_;
  std::vector<segment> segments_;  // oldest first; the last is appended to
  int fd_ = -1;                    // of the last segment
  std::uint64_t next_seq_ = 1;
  std::map<std::uint64_t, std::uint64_t> where_;  // live seq -> segment id holding it
  bool dirty_ = false;
  std::vector<entry> recovered_;
};

}  // namespace sw
