// Thread-safe figures for /metrics: fixed counters, named counters, latency summaries and per-actor-kind
// statistics. Owned by the service (no global state) and shared with the actors that report into it.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "proto/time.hpp"

namespace sw {

struct latency_summary {
  std::uint64_t count = 0;
  double avg = 0, min = 0, max = 0, p50 = 0, p95 = 0, p99 = 0;
};

// Count/sum/min/max over all samples; percentiles over the most recent 2 048.
class latency_recorder {
public:
  void add(double ms);
  latency_summary summary() const;

private:
  mutable std::mutex mu_;
  std::uint64_t count_ = 0;
  double sum_ = 0, min_ = 0, max_ = 0;
  std::array<double, 2048> ring_{};
};

// Statistics of one actor kind (session, room, network, ...).
struct actor_kind_stats {
  std::atomic<std::int64_t> live{0};
  std::atomic<std::uint64_t> spawned{0};
  std::atomic<std::uint64_t> processed{0};
  std::atomic<std::int64_t> mailbox_sum{0};  // sum of the live actors' last seen mailbox sizes
  std::atomic<std::int64_t> mailbox_max{0};  // largest mailbox ever seen
  latency_recorder processing;               // handler time, ms
};

// The state of one room's LiveKit transcription, as its egress actor last published it.
struct egress_room_view {
  std::string mode;            // track | room
  std::string state;           // starting | running | stopping
  std::uint32_t egresses = 0;  // egresses LiveKit has started for the room (ours, not ended)
  std::uint32_t starting = 0;  // start calls in flight
  std::uint32_t streams = 0;   // their audio streams connected to /egress/audio
  std::uint64_t failures = 0;  // LiveKit calls that failed
  std::string last_error;
};

class metrics {
public:
  metrics();

  // fixed counters of the reference service
  std::atomic<std::uint64_t> messages_received{0};  // audio frames accepted
  std::atomic<std::uint64_t> messages_sent{0};      // transcripts handed to clients (per client)
  std::atomic<std::int64_t> active_relays{0};       // live upstream relays of any provider
  std::atomic<std::uint64_t> total_errors{0};
  std::atomic<std::int64_t> live_streams{0};        // participant streams the gateway actor tracks
  std::atomic<std::int64_t> stt_buffered_bytes{0};  // audio held by STT relays for (re)sending, all streams
  // The heap as the memory trim saw it after its last trim (glibc's mallinfo2): what is allocated, and what is free
  // inside the heap (kept by the allocator, partly resident). 0 until the first trim.
  std::atomic<std::uint64_t> heap_in_use_bytes{0};
  std::atomic<std::uint64_t> heap_free_bytes{0};

  // Where error and warning lines go (the service's log; `error` tells the level). Every error() and note()
  // writes one, at most one a second per kind, with the number left out since the last.
  void set_log(std::function<void(bool error, const std::string&)> log);
  // Counts `counter` (by n) and logs `message` as a warning, at most once a second per counter: a failure that
  // is not the service's own (a client's bad frame, an upstream's odd message), yet never silent.
  void note(const std::string& counter, const std::string& message, std::uint64_t n = 1);
  // Logs `message` as a warning at most once a second per `kind`, counting nothing (net/'s counters are its own).
  void log_throttled(const std::string& kind, const std::string& message);
  // For every kind whose lines were left out and whose last line is a second old at `now` (now_ms()): a line saying
  // how many, at the kind's level. Called every second (actors/log_flush.hpp).
  void flush_suppressed(std::int64_t now);
  void flush_suppressed();

  // Counts an error, keeps it as the last one and logs it, at most once a second per `kind` (named like a counter:
  // every stream's ack timeout in an upstream's outage is one kind, not one line a stream).
  void error(const std::string& kind, const std::string& message);
  // The same, its kind the message's first 24 characters: for messages that start with what failed, not with a
  // stream's or a room's name.
  void error(const std::string& message);
  // A failure the service cannot run on (see supervisor_actor); the first one is kept.
  void fail(const std::string& why);
  std::string failure() const;  // empty while there is none
  void count(const std::string& name, std::uint64_t n = 1);
  void observe(const std::string& name, double ms);
  // The recorder behind observe(name): it lives as long as this object, so a hot path can keep it.
  latency_recorder& latency(const std::string& name);
  actor_kind_stats& actor_kind(const std::string& kind);
  // Egress actors publish their room's state; it is erased when the actor ends.
  void set_egress_room(const std::string& slug, egress_room_view v);
  void erase_egress_room(const std::string& slug);

  struct snapshot {
    std::map<std::string, std::uint64_t> counters;
    std::map<std::string, latency_summary> latency;
    std::map<std::string, const actor_kind_stats*> actors;
    std::map<std::string, egress_room_view> egress_rooms;
    std::string last_error;
    std::int64_t last_error_ms = 0;
    double uptime_s = 0;
  };
  snapshot read() const;

private:
  mutable std::mutex mu_;
  std::map<std::string, std::uint64_t> counters_;
  std::map<std::string, std::unique_ptr<latency_recorder>> latency_;
  std::map<std::string, std::unique_ptr<actor_kind_stats>> actors_;
  std::map<std::string, egress_room_view> egress_rooms_;
  std::string last_error_;
  std::string failure_;
  std::function<void(bool, const std::string&)> log_;
  void log_line(bool error, const std::string& kind, const std::string& message, std::unique_lock<std::mutex>& lock);
  struct throttle {
    std::int64_t last_ms = 0;
    std::uint64_t suppressed = 0;
    bool error = false;  // the level of its lines
  };
  std::map<std::string, throttle> throttles_;
  std::int64_t last_error_ms_ = 0;
  std::chrono::steady_clock::time_point started_;
};

using metrics_ptr = std::shared_ptr<metrics>;

// Per-actor bookkeeping: counts the actor live while it exists and each handled message.
class actor_probe {
public:
  actor_probe() = default;
  actor_probe(metrics_ptr m, const std::string& kind);
  ~actor_probe();
  actor_probe(actor_probe&& other) noexcept;
  actor_probe& operator=(actor_probe&& other) noexcept;
  actor_probe(const actor_probe&) = delete;
  actor_probe& operator=(const actor_probe&) = delete;

  // Records one handled message: mailbox size seen at its start and the handler's duration.
  void handled(std::size_t mailbox_size, std::chrono::steady_clock::time_point started);

private:
  metrics_ptr m_;
  actor_kind_stats* kind_ = nullptr;
  std::int64_t last_mailbox_ = 0;
};

// RAII helper for the top of a handler: `auto t = st.probe_scope(self);`.
template <class Self>
struct probe_scope {
  probe_scope(actor_probe& p, Self* self)
      : p_(p), mailbox_(self->mailbox().size()), started_(std::chrono::steady_clock::now()) {}
  ~probe_scope() { p_.handled(mailbox_, started_); }
  actor_probe& p_;
  std::size_t mailbox_;
  std::chrono::steady_clock::time_point started_;
};

// The process's anonymous resident memory in KiB (RssAnon in /proc/self/status, Linux 4.5 on): heap and stacks,
// not the code. -1 when the kernel does not say.
long self_rss_anon_kib();

}  // namespace sw
