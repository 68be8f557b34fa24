// The local journal of accepted finals and usage rows: appended (and fsync'd at least every 100 ms) before a
// final counts as accepted, retired once its batch committed, replayed at start-up. One file, text lines:
//   F <seq> <json final_record>   U <seq> <json usage_record>   R <seq> (retired)
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

  // Opens (creating the directory), reads what is live and compacts the file. Throws std::runtime_error.
  explicit journal(const std::string& dir);
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
  std::size_t live() const { return live_; }
  // Live entries with seq > after (for reloading rows that did not fit in memory).
  std::vector<entry> read_live(std::uint64_t after, std::size_t max);

  static std::string encode(const final_record& f);
  static bool decode(const std::string& json, final_record& f);
  static std::string encode(const usage_record& u);
  static bool decode(const std::string& json, usage_record& u);

private:
  void write_line(const std::string& line);
  std::string path_;
  int fd_ = -1;
  std::uint64_t next_seq_ = 1;
  std::size_t live_ = 0;
  bool dirty_ = false;
  std::vector<entry> recovered_;
};

}  // namespace sw
