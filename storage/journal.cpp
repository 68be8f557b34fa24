#include "storage/journal.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>

#include "actors/json.hpp"
#include "actors/rapidjson.hpp"

namespace sw {

namespace {

std::string str(const rapidjson::Value& o, const char* k) {
  auto it = o.FindMember(k);
  return it != o.MemberEnd() && it->value.IsString() ? it->value.GetString() : "";
}
double num(const rapidjson::Value& o, const char* k) {
  auto it = o.FindMember(k);
  return it != o.MemberEnd() && it->value.IsNumber() ? it->value.GetDouble() : 0;
}
std::int64_t i64(const rapidjson::Value& o, const char* k) {
  auto it = o.FindMember(k);
  return it != o.MemberEnd() && it->value.IsInt64() ? it->value.GetInt64() : 0;
}

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

}  // namespace

std::string journal::encode(const final_record& f) {
  const auto& t = f.transcript;
  return json_builder()
      .str("slug", t.session_slug)
      .str("utt", t.utterance_id)
      .str("text", t.text)
      .str("spk", t.speaker_id)
      .str("name", t.speaker_name)
      .str("lang", t.language)
      .dbl("start", t.start)
      .dbl("end", t.end)
      .str("sid", f.session_id)
      .num("t0", f.stream_started_ms)
      .done();
}

bool journal::decode(const std::string& json, final_record& f) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  if (d.HasParseError() || !d.IsObject()) return false;
  auto& t = f.transcript;
  t.session_slug = str(d, "slug");
  t.utterance_id = str(d, "utt");
  t.text = str(d, "text");
  t.speaker_id = str(d, "spk");
  t.speaker_name = str(d, "name");
  t.language = str(d, "lang");
  t.start = num(d, "start");
  t.end = num(d, "end");
  t.is_final = true;
  f.session_id = str(d, "sid");
  f.stream_started_ms = i64(d, "t0");
  return !t.session_slug.empty() && !t.utterance_id.empty();
}

std::string journal::encode(const usage_record& u) {
  return json_builder()
      .str("slug", u.session_slug)
      .str("sid", u.session_id)
      .str("ident", u.identity)
      .num("s", u.started_ms)
      .num("e", u.ended_ms)
      .unum("chunks", u.audio_chunks)
      .unum("tr", u.transcripts)
      .unum("fin", u.finals)
      .unum("par", u.partials)
      .unum("err", u.errors)
      .done();
}

bool journal::decode(const std::string& json, usage_record& u) {
  rapidjson::Document d;
  d.Parse(json.c_str());
  if (d.HasParseError() || !d.IsObject()) return false;
  u.session_slug = str(d, "slug");
  u.session_id = str(d, "sid");
  u.identity = str(d, "ident");
  u.started_ms = i64(d, "s");
  u.ended_ms = i64(d, "e");
  u.audio_chunks = static_cast<std::uint64_t>(num(d, "chunks"));
  u.transcripts = static_cast<std::uint64_t>(num(d, "tr"));
  u.finals = static_cast<std::uint64_t>(num(d, "fin"));
  u.partials = static_cast<std::uint64_t>(num(d, "par"));
  u.errors = static_cast<std::uint64_t>(num(d, "err"));
  return !u.session_slug.empty();
}

journal::journal(const std::string& dir) {
  std::filesystem::create_directories(dir);
  path_ = (std::filesystem::path(dir) / "finals.journal").string();
  // Read what is there: entries minus retired ones. A torn last line (crash mid-write) is ignored.
  std::map<std::uint64_t, entry> live;
  {
    std::ifstream in(path_);
    std::string line;
    while (std::getline(in, line)) {
      if (line.size() < 3) continue;
      char kind = line[0];
      auto sp = line.find(' ', 2);
      std::uint64_t seq = std::strtoull(line.c_str() + 2, nullptr, 10);
      if (seq == 0) continue;
      next_seq_ = std::max(next_seq_, seq + 1);
      if (kind == 'R') {
        live.erase(seq);
      } else if ((kind == 'F' || kind == 'U') && sp != std::string::npos) {
        entry e;
        e.seq = seq;
        e.is_final = kind == 'F';
        bool ok = e.is_final ? decode(line.substr(sp + 1), e.final) : decode(line.substr(sp + 1), e.usage);
        if (ok) live[seq] = std::move(e);
      }
    }
  }
  // Compact: rewrite only the live entries, atomically.
  std::string tmp = path_ + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    for (auto& [seq, e] : live)
      out << (e.is_final ? 'F' : 'U') << ' ' << seq << ' ' << (e.is_final ? encode(e.final) : encode(e.usage)) << '\n';
    out.flush();
    if (!out) throw std::runtime_error("cannot write journal " + tmp);
  }
  int tfd = ::open(tmp.c_str(), O_RDONLY);
  if (tfd >= 0) {
    ::fsync(tfd);
    ::close(tfd);
  }
  std::filesystem::rename(tmp, path_);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot open journal " + path_);
  for (auto& [seq, e] : live) recovered_.push_back(std::move(e));
  live_ = recovered_.size();
}

journal::~journal() {
  if (fd_ >= 0) {
    sync();
    ::close(fd_);
  }
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
      fail("cannot append to journal " + path_ + (cut ? "" : " (a partial line stays)"));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  dirty_ = true;
}

std::uint64_t journal::append(const final_record& f) {
  auto seq = next_seq_++;
  write_line("F " + std::to_string(seq) + " " + encode(f) + "\n");
  ++live_;
  return seq;
}

std::uint64_t journal::append(const usage_record& u) {
  auto seq = next_seq_++;
  write_line("U " + std::to_string(seq) + " " + encode(u) + "\n");
  ++live_;
  return seq;
}

void journal::retire(const std::vector<std::uint64_t>& seqs) {
  if (seqs.empty()) return;
  // Counted first: the rows are written whether or not their R lines reach the disk (if not, they are
  // written again after a restart, which the upserts make harmless).
  live_ -= std::min(live_, seqs.size());
  if (live_ == 0) {  // nothing live: start the file afresh (which also frees a full disk)
    if (::ftruncate(fd_, 0) != 0) fail("cannot truncate journal " + path_);
    dirty_ = false;
    return;
  }
  std::string lines;
  for (auto s : seqs) lines += "R " + std::to_string(s) + "\n";
  write_line(lines);
}

void journal::sync() {
  if (!dirty_) return;
  if (::fdatasync(fd_) != 0) fail("cannot sync journal " + path_);
  dirty_ = false;
}

std::vector<journal::entry> journal::read_live(std::uint64_t after, std::size_t max) {
  sync();
  std::map<std::uint64_t, entry> live;
  std::set<std::uint64_t> retired;
  std::ifstream in(path_);
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() < 3) continue;
    std::uint64_t seq = std::strtoull(line.c_str() + 2, nullptr, 10);
    if (line[0] == 'R') {
      live.erase(seq);
      retired.insert(seq);
    } else if (line[0] == 'F' && seq > after && !retired.count(seq)) {
      auto sp = line.find(' ', 2);
      entry e;
      e.seq = seq;
      if (sp != std::string::npos && decode(line.substr(sp + 1), e.final)) live[seq] = std::move(e);
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
