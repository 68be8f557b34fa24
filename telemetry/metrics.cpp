#include "telemetry/metrics.hpp"

#include <algorithm>
#include <ctime>
#include <fstream>
#include <utility>
#include <vector>

namespace sw {

void latency_recorder::add(double ms) {
  std::lock_guard<std::mutex> lock(mu_);
  if (count_ == 0 || ms < min_) min_ = ms;
  if (count_ == 0 || ms > max_) max_ = ms;
  ring_[count_ % ring_.size()] = ms;
  ++count_;
  sum_ += ms;
}

latency_summary latency_recorder::summary() const {
  latency_summary s;
  std::vector<double> recent;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.count = count_;
    if (count_ == 0) return s;
    s.avg = sum_ / static_cast<double>(count_);
    s.min = min_;
    s.max = max_;
    auto n = std::min<std::uint64_t>(count_, ring_.size());
    recent.assign(ring_.begin(), ring_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  // Three selections, each within what the one before left above it: linear, where sorting 2 048 samples for each
  // actor kind made /metrics cost half a millisecond of the server's CPU.
  auto from = recent.begin();
  auto pick = [&](double q) {
    const auto idx =
        std::min(static_cast<std::size_t>(q * static_cast<double>(recent.size() - 1) + 0.5), recent.size() - 1);
    const auto at = recent.begin() + static_cast<std::ptrdiff_t>(idx);
    std::nth_element(from, at, recent.end());
    from = at;
    return *at;
  };
  s.p50 = pick(0.50);
  s.p95 = pick(0.95);
  s.p99 = pick(0.99);
  return s;
}

metrics::metrics() : started_(std::chrono::steady_clock::now()) {}

void metrics::set_log(std::function<void(bool error, const std::string&)> log) {
  std::lock_guard<std::mutex> lock(mu_);
  log_ = std::move(log);
}

// Called with the lock held; writes the line (if any) after releasing it.
void metrics::log_line(bool error, const std::string& kind, const std::string& message,
                       std::unique_lock<std::mutex>& lock) {
  if (!log_) return;
  if (throttles_.size() > 1000) throttles_.clear();  // kinds are few; this only bounds a surprise
  auto& t = throttles_[kind];
  const auto now = now_ms();
  if (t.last_ms != 0 && now - t.last_ms < 1000) {
    ++t.suppressed;
    return;
  }
  std::string line = message;
  if (t.suppressed) line += " (and " + std::to_string(t.suppressed) + " more of this kind in the last seconds)";
  t.last_ms = now;
  t.suppressed = 0;
  t.error = error;
  auto log = log_;
  lock.unlock();
  log(error, line);
}

void metrics::flush_suppressed(std::int64_t now) {
  std::vector<std::pair<bool, std::string>> lines;
  std::function<void(bool, const std::string&)> log;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!log_) return;
    log = log_;
    for (auto& [kind, t] : throttles_) {
      if (t.suppressed == 0 || now - t.last_ms < 1000) continue;
      lines.emplace_back(t.error, kind + ": " + std::to_string(t.suppressed) +
                                      " more of this kind in the last seconds, not logged one by one");
      t.last_ms = now;  // this line is the kind's line of this second
      t.suppressed = 0;
    }
  }
  for (auto& [error, line] : lines) log(error, line);
}

void metrics::flush_suppressed() {
  flush_suppressed(now_ms());
}

void metrics::error(const std::string& kind, const std::string& message) {
  ++total_errors;
  std::unique_lock<std::mutex> lock(mu_);
  last_error_ = message;
  last_error_ms_ = now_ms();
  log_line(true, kind, message, lock);
}

void metrics::error(const std::string& message) {
  error(message.substr(0, 24), message);
}

void metrics::note(const std::string& counter, const std::string& message, std::uint64_t n) {
  std::unique_lock<std::mutex> lock(mu_);
  counters_[counter] += n;
  log_line(false, counter, message, lock);
}

void metrics::log_throttled(const std::string& kind, const std::string& message) {
  std::unique_lock<std::mutex> lock(mu_);
  log_line(false, kind, message, lock);
}

void metrics::fail(const std::string& why) {
  error(why);
  std::lock_guard<std::mutex> lock(mu_);
  if (failure_.empty()) failure_ = why;
}

std::string metrics::failure() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

void metrics::count(const std::string& name, std::uint64_t n) {
  std::lock_guard<std::mutex> lock(mu_);
  counters_[name] += n;
}

void metrics::observe(const std::string& name, double ms) {
  latency(name).add(ms);
}

latency_recorder& metrics::latency(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = latency_[name];
  if (!slot) slot = std::make_unique<latency_recorder>();
  return *slot;
}

actor_kind_stats& metrics::actor_kind(const std::string& kind) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = actors_[kind];
  if (!slot) slot = std::make_unique<actor_kind_stats>();
  return *slot;
}

void metrics::set_egress_room(const std::string& slug, egress_room_view v) {
  std::lock_guard<std::mutex> lock(mu_);
  egress_rooms_[slug] = std::move(v);
}

void metrics::erase_egress_room(const std::string& slug) {
  std::lock_guard<std::mutex> lock(mu_);
  egress_rooms_.erase(slug);
}

metrics::snapshot metrics::read() const {
  snapshot s;
  std::vector<std::pair<std::string, latency_recorder*>> recorders;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.counters = counters_;
    for (auto& [k, v] : latency_) recorders.emplace_back(k, v.get());
    for (auto& [k, v] : actors_) s.actors[k] = v.get();
    s.egress_rooms = egress_rooms_;
    s.last_error = last_error_;
    s.last_error_ms = last_error_ms_;
  }
  for (auto& [k, r] : recorders) s.latency[k] = r->summary();
  s.uptime_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  return s;
}

actor_probe::actor_probe(metrics_ptr m, const std::string& kind) : m_(std::move(m)) {
  if (!m_) return;
  kind_ = &m_->actor_kind(kind);
  ++kind_->live;
  ++kind_->spawned;
}

actor_probe::~actor_probe() {
  if (!kind_) return;
  --kind_->live;
  kind_->mailbox_sum -= last_mailbox_;
}

actor_probe::actor_probe(actor_probe&& other) noexcept
    : m_(std::move(other.m_)), kind_(other.kind_), last_mailbox_(other.last_mailbox_) {
  other.kind_ = nullptr;
  other.last_mailbox_ = 0;
}

actor_probe& actor_probe::operator=(actor_probe&& other) noexcept {
  if (this != &other) {
    this->~actor_probe();
    new (this) actor_probe(std::move(other));
  }
  return *this;
}

void actor_probe::handled(std::size_t mailbox_size, std::chrono::steady_clock::time_point started) {
  if (!kind_) return;
  ++kind_->processed;
  auto size = static_cast<std::int64_t>(mailbox_size);
  kind_->mailbox_sum += size - last_mailbox_;
  last_mailbox_ = size;
  auto prev = kind_->mailbox_max.load();
  while (size > prev && !kind_->mailbox_max.compare_exchange_weak(prev, size)) {
  }
  kind_->processing.add(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
}

long self_rss_anon_kib() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("RssAnon:", 0) == 0) return std::stol(line.substr(8));
  return -1;
}

}  // namespace sw
