#include "storage/journal.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>

#include "proto/journal_line.hpp"

namespace sw {

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

}  // namespace

std::string journal::path_of(std::uint64_t id) const {
  char name[48];
  std::snprintf(name, sizeof name, "rows.%010llu.journal", static_cast<unsigned long long>(id));
  return (std::filesystem::path(dir_) / name).string();
}

namespace {

// "F 12 {...}" -> kind 'F', seq 12, json at `json`; false for anything else (a torn line, a blank).
bool split_line(const std::string& line, char& kind, std::uint64_t& seq, std::size_t& json) {
  if (line.size() < 3 || line[1] != ' ') return false;
  kind = line[0];
  seq = std::strtoull(line.c_str() + 2, nullptr, 10);
  if (seq == 0) return false;
  json = line.find(' ', 2);
  return kind == 'R' || ((kind == 'F' || kind == 'U') && json != std::string::npos);
}

void sync_dir(const std::string& dir) {  // a segment created or deleted survives a crash
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

journal::journal(const std::string& dir, std::size_t segment_bytes)
    : dir_(dir), segment_bytes_(std::max<std::size_t>(segment_bytes, 4096)) {
  namespace fs = std::filesystem;
  fs::create_directories(dir);
  // Earlier versions' files take today's names: one file (before segments), then segments named for finals only.
  if (auto legacy = fs::path(dir) / "finals.journal"; fs::exists(legacy)) fs::rename(legacy, path_of(0));
  auto segment_id = [](const std::string& name, const std::string& head) -> std::optional<std::uint64_t> {
    const std::string tail = ".journal";
    if (name.size() != head.size() + 10 + tail.size() || name.rfind(head, 0) != 0 ||
        name.compare(name.size() - tail.size(), tail.size(), tail) != 0)
      return std::nullopt;
    auto digits = name.substr(head.size(), 10);
    if (digits.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
    return std::stoull(digits);
  };
  for (auto& f : fs::directory_iterator(dir))
    if (auto id = segment_id(f.path().filename().string(), "finals.")) fs::rename(f.path(), path_of(*id));
  std::vector<std::uint64_t> ids;
  for (auto& f : fs::directory_iterator(dir))
    if (auto id = segment_id(f.path().filename().string(), "rows.")) ids.push_back(*id);
  std::sort(ids.begin(), ids.end());
  // Read every segment in order: entries minus retired ones; a carried-forward copy replaces the older one. A
  // torn line (a crash mid-write) is ignored.
  std::map<std::uint64_t, entry> live;
  for (auto id : ids) {
    segment sg;
    sg.id = id;
    sg.path = path_of(id);
    std::ifstream in(sg.path);
    std::string line;
    while (std::getline(in, line)) {
      sg.bytes += line.size() + 1;
      char kind;
      std::uint64_t seq;
      std::size_t json;
      if (!split_line(line, kind, seq, json)) continue;
      next_seq_ = std::max(next_seq_, seq + 1);
      if (kind == 'R') {
        live.erase(seq);
        where_.erase(seq);
        continue;
      }
      entry e;
      e.seq = seq;
      e.is_final = kind == 'F';
      if (!(e.is_final ? decode_journal_record(line.substr(json + 1), e.final)
                       : decode_journal_record(line.substr(json + 1), e.usage)))
        continue;
      live[seq] = std::move(e);
      where_[seq] = id;
      ++sg.entries;
      sg.max_seq = std::max(sg.max_seq, seq);
    }
    segments_.push_back(std::move(sg));
  }
  for (auto& [seq, id] : where_)
    for (auto& sg : segments_)
      if (sg.id == id) ++sg.live;
  for (auto& [seq, e] : live) recovered_.push_back(std::move(e));
  open_segment();
  collect();
}

journal::~journal() {
  if (fd_ >= 0) {
    try {
      sync();
    } catch (const std::exception&) {  // nothing to tell anyone any more: the next start replays what is there
    }
    ::close(fd_);
  }
}

void journal::open_segment() {
  segment sg;
  sg.id = segments_.empty() ? 1 : segments_.back().id + 1;
  sg.path = path_of(sg.id);
  int fd = ::open(sg.path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("cannot open journal " + sg.path);
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
  segments_.push_back(std::move(sg));
  sync_dir(dir_);
}

std::uint64_t journal::bytes() const {
  std::uint64_t n = 0;
  for (auto& sg : segments_) n += sg.bytes;
  return n;
}

void journal::write_line(const std::string& line) {
  const char* p = line.data();
  std::size_t left = line.size();
  const auto start = ::lseek(fd_, 0, SEEK_END);
  while (left > 0) {
    auto n = ::write(fd_, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      const auto error = errno;
      // A full disk may have taken part of the line: cut it off, so that the next line starts a line.
      const bool cut = start >= 0 && ::ftruncate(fd_, start) == 0;
      errno = error;
      fail("cannot append to journal " + segments_.back().path + (cut ? "" : " (a partial line stays)"));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  segments_.back().bytes += line.size();
  dirty_ = true;
}

void journal::rotate_if_full() {
  if (segments_.back().bytes < segment_bytes_) return;
  sync();  // what the old segment holds is on disk before appends go elsewhere
  open_segment();
  collect();
}

void journal::collect() {
  while (segments_.size() > 1) {
    auto& old = segments_.front();
    if (old.live > 0) {
      if (old.live * 2 > old.entries) return;  // mostly live: it stays
      // Carry its live lines into the newest segment (same seq); they are retired there later.
      std::ifstream in(old.path);
      std::string line;
      auto& now = segments_.back();
      while (old.live > 0 && std::getline(in, line)) {
        char kind;
        std::uint64_t seq;
        std::size_t json;
        if (!split_line(line, kind, seq, json) || kind == 'R') continue;
        auto it = where_.find(seq);
        if (it == where_.end() || it->second != old.id) continue;
        write_line(line + "\n");
        it->second = now.id;
        --old.live;
        ++now.entries;
        ++now.live;
        now.max_seq = std::max(now.max_seq, seq);
      }
      if (old.live > 0) return;  // the file lacks what the count says: keep it, it is replayed as it is
      sync();
    }
    if (::unlink(old.path.c_str()) != 0 && errno != ENOENT) fail("cannot delete journal segment " + old.path);
    segments_.erase(segments_.begin());
    sync_dir(dir_);
  }
}

std::uint64_t journal::append_entry(char kind, const std::string& json) {
  auto seq = next_seq_++;
  write_line(std::string(1, kind) + " " + std::to_string(seq) + " " + json + "\n");
  auto& sg = segments_.back();
  where_[seq] = sg.id;
  ++sg.entries;
  ++sg.live;
  sg.max_seq = seq;
  rotate_if_full();
  return seq;
}

std::uint64_t journal::append(const final_record& f) {
  return append_entry('F', encode_journal_record(f));
}

std::uint64_t journal::append(const usage_record& u) {
  return append_entry('U', encode_journal_record(u));
}

void journal::retire(const std::vector<std::uint64_t>& seqs) {
  if (seqs.empty()) return;
  // Counted first: the rows are written whether or not their R lines reach the disk (if not, they are
  // written again after a restart, which the upserts make harmless).
  for (auto s : seqs) {
    auto it = where_.find(s);
    if (it == where_.end()) continue;
    for (auto& sg : segments_)
      if (sg.id == it->second) --sg.live;
    where_.erase(it);
  }
  if (where_.empty()) {  // nothing live: every older segment goes, the newest starts afresh (frees a full disk)
    while (segments_.size() > 1) {
      ::unlink(segments_.front().path.c_str());
      segments_.erase(segments_.begin());
    }
    if (::ftruncate(fd_, 0) != 0) fail("cannot truncate journal " + segments_.back().path);
    auto& sg = segments_.back();
    sg.bytes = sg.entries = sg.live = 0;
    dirty_ = false;
    return;
  }
  std::string lines;
  for (auto s : seqs) lines += "R " + std::to_string(s) + "\n";
  write_line(lines);
  collect();
}

void journal::sync() {
  if (!dirty_) return;
  if (::fdatasync(fd_) != 0) fail("cannot sync journal " + segments_.back().path);
  dirty_ = false;
}

std::vector<journal::entry> journal::read_live(std::uint64_t after, std::size_t max) {
  sync();
  std::map<std::uint64_t, entry> live;
  for (auto& sg : segments_) {
    if (sg.live == 0 || sg.max_seq <= after) continue;  // nothing to find there
    std::ifstream in(sg.path);
    std::string line;
    while (std::getline(in, line)) {
      char kind;
      std::uint64_t seq;
      std::size_t json;
      if (!split_line(line, kind, seq, json) || kind != 'F' || seq <= after) continue;
      auto it = where_.find(seq);
      if (it == where_.end() || it->second != sg.id) continue;
      entry e;
      e.seq = seq;
      if (decode_journal_record(line.substr(json + 1), e.final)) live[seq] = std::move(e);
    }
  }
  std::vector<entry> out;
  for (auto& [seq, e] : live) {
    if (out.size() >= max) break;
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace sw
