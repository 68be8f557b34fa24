#include "actors/persistence.hpp"

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>

#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "actors/background_thread.hpp"
#include "storage/journal.hpp"
#include "storage/repository.hpp"

namespace sw {

namespace {

// --- the database actor: every blocking call into storage/ ---------------------------------------

struct database_state {
  static inline const char* name = "database";
  context_ptr ctx;
  std::unique_ptr<repository> repo;
  actor_probe probe;
};

using db_self = database_actor::stateful_pointer<database_state>;

// Opens and migrates the database unless it is open. (The persistence actor paces the retries.)
bool open_database(db_self self, db_outcome& out) {
  auto& st = self->state;
  if (st.repo) return true;
  try {
    auto r = repository::open(st.ctx->cfg.database_url, st.ctx->cfg.sqlite_path);
    r->migrate();
    st.repo = std::move(r);
    return true;
  } catch (const std::exception& e) {
    out.error = e.what();
    return false;
  }
}

void failed(db_self self, db_outcome& out, const std::string& what) {
  out.error = what;
  self->state.repo.reset();  // reconnect next time: the connection may be gone
}

database_actor::behavior_type database(db_self self, context_ptr ctx) {
  become_background_thread(ctx, "database");
  self->state.ctx = ctx;
  self->state.probe = actor_probe(ctx->metrics, "database");
  using scope = probe_scope<std::remove_pointer_t<db_self>>;
  return {
      [self](write_atom, const db_batch& b) -> db_outcome {
        scope t(self->state.probe, self);
        auto& st = self->state;
        db_outcome out;
        if (!open_database(self, out)) return out;
        out.backend = st.repo->backend();
        // A failure while the server still answers is the row's own (a value it refuses): it is found row by row
        // and set aside, so that one row never holds up the others. A server that does not answer fails the batch.
        auto refused = [&](const std::string& what, const std::string& slug, const std::exception& e) {
          if (st.repo->ping()) {
            st.ctx->metrics->error("persistence: the database refused a " + what + " of room " + slug + ": " +
                                   e.what());
            return true;
          }
          failed(self, out, e.what());
          return false;
        };
        if (!b.finals.empty()) {
          auto started = std::chrono::steady_clock::now();
          try {
            out.unknown = st.repo->write_batch(b.finals);
          } catch (const std::exception& e) {
            if (!st.repo->ping()) {
              failed(self, out, e.what());
              return out;
            }
            out.unknown.clear();
            for (std::size_t i = 0; i < b.finals.size(); ++i) {
              try {
                if (!st.repo->write_batch({b.finals[i]}).empty()) out.unknown.push_back(i);
              } catch (const std::exception& row) {
                if (!refused("final", b.finals[i].transcript.session_slug, row)) return out;
                out.refused.push_back(i);
              }
            }
          }
          out.batch_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
        }
        out.finals_written = true;
        for (auto& u : b.usage) {
          try {
            out.usage.push_back(st.repo->write_usage(u, st.ctx->cfg.cost_per_minute) ? row_fate::written
                                                                                     : row_fate::unknown_room);
          } catch (const std::exception& e) {
            if (!refused("usage row", u.session_slug, e)) return out;
            out.usage.push_back(row_fate::refused);
          }
        }
        out.ok = true;
        return out;
      },
      [self](history_atom, const transcript_query& q) -> transcript_result {
        scope t(self->state.probe, self);
        transcript_result r;
        db_outcome out;
        if (!open_database(self, out)) {
          r.error = out.error;
          return r;
        }
        try {
          r.segments = self->state.repo->transcript(q.slug, q.offset, q.limit, r.found, r.more);
        } catch (const std::exception& e) {
          failed(self, out, e.what());
          r.error = out.error;
        }
        return r;
      },
      [self](ping_atom) -> db_outcome {
        scope t(self->state.probe, self);
        db_outcome out;
        if (!open_database(self, out)) return out;
        out.backend = self->state.repo->backend();
        out.ok = self->state.repo->ping();
        if (!out.ok) failed(self, out, "the database does not answer");
        return out;
      },
  };
}

// --- the persistence actor: journal, queues and batching; never blocks on the database ------------

struct persistence_state {
  static inline const char* name = "persistence";
  context_ptr ctx;
  database_actor db;
  std::unique_ptr<journal> jr;
  std::deque<journal::entry> pending;        // finals in memory, oldest first
  std::deque<journal::entry> usage_pending;  // usage rows
  // Rows set aside, retried every 5 s: of rooms the web app's database does not know (yet), or refused by the
  // database on their own. Bounded by PERSIST_MAX_PARKED (finals and usage together): beyond it the oldest is
  // given up, retired from the journal, counted and logged.
  std::deque<journal::entry> parked;
  std::deque<journal::entry> usage_parked;
  bool spilled = false;                // some live finals are only in the journal
  std::size_t unjournaled_finals = 0;  // in memory only (seq 0): the journal could not take them
  std::size_t unjournaled_usage = 0;   // of usage_pending and usage_parked
  std::uint64_t last_in_memory = 0;    // highest seq ever held in memory
  queue_stats stats;
  bool writing = false;  // a db_batch is with the database actor: the front of the queues is in flight
  bool pinging = false;
  std::int64_t ping_started_ms = 0;
  std::int64_t ping_done_ms = 0;  // the last answer: /health and /ready ask at most once a second
  std::vector<caf::typed_response_promise<queue_stats>> waiting;  // queue questions waiting for a ping
  std::size_t reads = 0;  // transcript reads with the database actor (bounded: a dead server must not pile them up)
  std::int64_t backoff_ms = 0;
  std::int64_t next_attempt_ms = 0;
  std::int64_t last_parked_retry_ms = 0;
  std::int64_t last_flush_tick_ms = 0;
  bool tick_armed = false;
  std::optional<caf::typed_response_promise<bool>> shutdown;  // set while shutting down
  std::int64_t shutdown_deadline_ms = 0;
  actor_probe probe;
};

using self_ptr = persistence_actor::stateful_pointer<persistence_state>;

void note_error(self_ptr self, const std::string& what) {
  auto& st = self->state;
  ++st.stats.total_errors;
  st.stats.last_error = what;
  st.ctx->metrics->error("persistence: " + what);
  st.backoff_ms = st.backoff_ms == 0 ? 100 : std::min<std::int64_t>(5000, st.backoff_ms * 2);
  st.next_attempt_ms = now_ms() + st.backoff_ms;
  st.stats.database_ok = false;
}

void arm_tick(self_ptr self) {
  auto& st = self->state;
  if (st.tick_armed) return;
  st.tick_armed = true;
  auto wait = std::min<std::int64_t>(100, st.ctx->cfg.persist_flush.count());  // fsync at least every 100 ms
  self->delayed_send(self, std::chrono::milliseconds(wait), tick_atom::value);
}

void journal_failed(persistence_state& st, const std::exception& e) {
  st.ctx->metrics->count("persist.journal_failures");
  st.ctx->metrics->error("journal: " + std::string(e.what()));
}

// The journal is the safety net of accepted rows, not their path to the database: when it cannot be written (a
// full disk, an I/O error), a row stays in memory with seq 0 and is still written. Only a crash before that
// would lose it.
template <class Record>
std::uint64_t journal_append(persistence_state& st, const Record& r) {
  try {
    return st.jr->append(r);
  } catch (const std::exception& e) {
    journal_failed(st, e);
    return 0;
  }
}

void journal_retire(persistence_state& st, const std::vector<std::uint64_t>& seqs) {
  try {
    st.jr->retire(seqs);
  } catch (const std::exception& e) {  // they are written: at worst written again after a restart
    journal_failed(st, e);
  }
}

void refill_from_journal(persistence_state& st) {
  if (!st.spilled || st.pending.size() >= st.ctx->cfg.persist_max_pending / 2) return;
  std::vector<journal::entry> more;
  try {
    more = st.jr->read_live(st.last_in_memory, st.ctx->cfg.persist_max_pending - st.pending.size());
  } catch (const std::exception& e) {  // still spilled: tried again with the next batch
    journal_failed(st, e);
    return;
  }
  for (auto& e : more) {
    st.last_in_memory = std::max(st.last_in_memory, e.seq);
    st.pending.push_back(std::move(e));
  }
  if (more.empty()) st.spilled = false;
}

void update_queue_length(persistence_state& st) {
  const auto usage = st.usage_pending.size() + st.usage_parked.size();
  const auto journaled_usage = usage - st.unjournaled_usage;
  const auto journaled_finals = st.jr->live() >= journaled_usage ? st.jr->live() - journaled_usage : 0;
  st.stats.queue_length = journaled_finals + st.unjournaled_finals;
  st.stats.usage_pending = usage;
  st.stats.parked = st.parked.size() + st.usage_parked.size();
  st.stats.bounded_out = st.spilled || st.stats.parked >= st.ctx->cfg.persist_max_parked;
}

// A row is done with, written or given up: out of the journal (or out of the count of rows only in memory).
void forget(persistence_state& st, const journal::entry& e, std::vector<std::uint64_t>& retire) {
  if (e.seq != 0) {
    retire.push_back(e.seq);
  } else if (e.is_final) {
    --st.unjournaled_finals;
  } else {
    --st.unjournaled_usage;
  }
}

// Sets a row aside until the next retry; beyond the bound the oldest parked row is given up.
void park(persistence_state& st, journal::entry e, std::vector<std::uint64_t>& retire) {
  if (st.parked.empty() && st.usage_parked.empty()) st.last_parked_retry_ms = now_ms();  // retried 5 s from now
  (e.is_final ? st.parked : st.usage_parked).push_back(std::move(e));
  while (st.parked.size() + st.usage_parked.size() > st.ctx->cfg.persist_max_parked) {
    auto& from = !st.parked.empty() ? st.parked : st.usage_parked;
    auto& old = from.front();
    st.ctx->metrics->count("persist.abandoned_rows");
    st.ctx->metrics->error("persistence: PERSIST_MAX_PARKED reached: gave up a " +
                           std::string(old.is_final ? "final" : "usage row") + " of room " +
                           (old.is_final ? old.final.transcript.session_slug : old.usage.session_slug));
    forget(st, old, retire);
    from.pop_front();
  }
}

bool has_work(const persistence_state& st) {
  return !st.pending.empty() || !st.usage_pending.empty() || st.spilled;
}

bool has_parked(const persistence_state& st) {
  return !st.parked.empty() || !st.usage_parked.empty();
}

// Parked rows are tried again every 5 s (the web app may have created the room, or mended what it refused).
bool parked_retry_due(const persistence_state& st) {
  return has_parked(st) && now_ms() - st.last_parked_retry_ms > 5000;
}

void sync_journal(persistence_state& st) {
  try {
    st.jr->sync();
  } catch (const std::exception& e) {
    st.ctx->metrics->error("journal: " + std::string(e.what()));
  }
}

// Answers a pending shutdown once everything is written or its bound has passed.
void settle_shutdown(self_ptr self) {
  auto& st = self->state;
  if (!st.shutdown) return;
  bool done = !has_work(st);
  if (!done && now_ms() < st.shutdown_deadline_ms) return;
  sync_journal(st);
  update_queue_length(st);
  st.shutdown->deliver(done);
  st.shutdown.reset();
}

void apply(self_ptr self, std::size_t n_finals, std::size_t n_usage, const db_outcome& out);

// Hands at most one batch of finals and the pending usage rows to the database actor, unless a batch is
// already there or a failure's backoff has not passed. Returns at once: the journal keeps taking finals.
void flush(self_ptr self) {
  auto& st = self->state;
  if (st.writing || now_ms() < st.next_attempt_ms) return;
  refill_from_journal(st);
  if (parked_retry_due(st)) {
    st.last_parked_retry_ms = now_ms();
    while (!st.parked.empty()) {
      st.pending.push_front(std::move(st.parked.back()));
      st.parked.pop_back();
    }
    while (!st.usage_parked.empty()) {
      st.usage_pending.push_front(std::move(st.usage_parked.back()));
      st.usage_parked.pop_back();
    }
  }
  db_batch b;
  auto n = std::min<std::size_t>(st.pending.size(), st.ctx->cfg.persist_batch);
  b.finals.reserve(n);
  for (std::size_t i = 0; i < n; ++i) b.finals.push_back(st.pending[i].final);
  for (auto& e : st.usage_pending) b.usage.push_back(e.usage);
  if (b.finals.empty() && b.usage.empty()) return;
  auto n_usage = b.usage.size();
  st.writing = true;
  self->request(st.db, caf::infinite, write_atom::value, std::move(b))
      .then([self, n, n_usage](const db_outcome& out) { apply(self, n, n_usage, out); },
            [self, n, n_usage](caf::error& e) {
              db_outcome out;
              out.error = "database actor: " + self->system().render(e);
              apply(self, n, n_usage, out);
            });
}

// Takes the database actor's answer for the batch made of the first n_finals / n_usage queued rows.
void apply(self_ptr self, std::size_t n_finals, std::size_t n_usage, const db_outcome& out) {
  auto& st = self->state;
  st.writing = false;
  std::vector<std::uint64_t> done;
  if (out.finals_written && n_finals > 0) {
    std::vector<bool> set_aside(n_finals, false);
    for (auto i : out.unknown) set_aside[i] = true;
    for (auto i : out.refused) set_aside[i] = true;
    std::size_t written = 0;
    std::string room;  // of a row set aside, for the log line
    for (std::size_t i = 0; i < n_finals; ++i) {
      if (set_aside[i]) {
        room = st.pending[i].final.transcript.session_slug;
        park(st, std::move(st.pending[i]), done);
      } else {
        forget(st, st.pending[i], done);
        ++written;
      }
    }
    if (!out.unknown.empty())
      st.ctx->metrics->note(
          "persist.unknown_session_rows",
          "persistence: finals of a room the database does not know are set aside (room " + room + ")",
          out.unknown.size());
    if (!out.refused.empty()) st.ctx->metrics->count("persist.refused_rows", out.refused.size());
    st.pending.erase(st.pending.begin(), st.pending.begin() + static_cast<std::ptrdiff_t>(n_finals));
    st.stats.total_flushed += written;
    st.stats.last_flush_ms = now_ms();
    st.ctx->metrics->observe("persist.batch_ms", out.batch_ms);
  }
  for (std::size_t i = 0; i < std::min(out.usage.size(), n_usage); ++i) {
    auto e = std::move(st.usage_pending.front());
    st.usage_pending.pop_front();
    if (out.usage[i] == row_fate::written) {
      forget(st, e, done);
      continue;
    }
    if (out.usage[i] == row_fate::unknown_room) {
      st.ctx->metrics->note("persist.unknown_session_rows",
                            "persistence: a usage row of a room the database does not know is set aside (room " +
                                e.usage.session_slug + ")");
    } else {
      st.ctx->metrics->count("persist.refused_rows");
    }
    park(st, std::move(e), done);
  }
  journal_retire(st, done);
  if (!out.backend.empty()) st.stats.backend = out.backend;
  if (out.ok) {
    st.backoff_ms = 0;
    st.stats.database_ok = true;
  } else {
    note_error(self, out.error);
    if (st.shutdown) st.next_attempt_ms = now_ms() + 100;  // the bound is short: keep trying
  }
  update_queue_length(st);
  // A full batch, spilled finals or a shutdown do not wait for the next tick.
  if (out.ok && (st.pending.size() >= st.ctx->cfg.persist_batch || st.spilled || (st.shutdown && has_work(st))))
    flush(self);
  settle_shutdown(self);
  if (has_work(st) || has_parked(st)) arm_tick(self);
}

void answer_waiting(persistence_state& st) {
  for (auto& rp : st.waiting) rp.deliver(st.stats);
  st.waiting.clear();
}

// Asks the database actor whether the database answers (one question at a time), for /ready. Questions
// waiting for it get their answer when it comes, or what is known after a second.
void ping(self_ptr self) {
  auto& st = self->state;
  if (st.pinging) return;
  st.pinging = true;
  st.ping_started_ms = now_ms();
  self->delayed_send(self, std::chrono::seconds(1), timeout_atom::value);
  self->request(st.db, caf::infinite, ping_atom::value)
      .then(
          [self](const db_outcome& out) {
            auto& s = self->state;
            s.pinging = false;
            s.ping_done_ms = now_ms();
            if (!out.backend.empty()) s.stats.backend = out.backend;
            if (!s.writing) s.stats.database_ok = out.ok;
            if (!out.ok && !out.error.empty()) s.stats.last_error = out.error;
            answer_waiting(s);
          },
          [self](caf::error&) {
            self->state.pinging = false;
            answer_waiting(self->state);
          });
}

}  // namespace

persistence_actor spawn_persistence(caf::actor_system& sys, context_ptr ctx) {
  return sys.spawn<caf::detached>(
      [](self_ptr self, context_ptr ctx) -> persistence_actor::behavior_type {
        become_background_thread(ctx, "persistence");
        auto& st = self->state;
        st.ctx = ctx;
        st.probe = actor_probe(ctx->metrics, "persistence");
        st.last_flush_tick_ms = now_ms();
        st.jr = std::make_unique<journal>(ctx->cfg.persist_journal_dir, ctx->cfg.persist_journal_segment_bytes);
        for (auto& e : st.jr->recovered()) {  // replay: everything accepted before a crash is written again
          if (!e.is_final) {
            st.usage_pending.push_back(e);
          } else if (st.pending.size() < ctx->cfg.persist_max_pending) {
            st.last_in_memory = std::max(st.last_in_memory, e.seq);
            st.pending.push_back(e);
          } else {
            st.spilled = true;
          }
        }
        if (!st.jr->recovered().empty()) {
          SW_LOG(ctx, info, "persistence: replaying " << st.jr->recovered().size() << " journaled rows");
          ctx->metrics->count("persist.replayed_rows", st.jr->recovered().size());
        }
        // The database actor lives and dies with this one; it opens and migrates the database right away.
        st.db = self->spawn<caf::detached + caf::linked>(database, ctx);
        ping(self);
        update_queue_length(st);
        arm_tick(self);
        using scope = probe_scope<std::remove_pointer_t<self_ptr>>;
        return {
            [self](final_atom, final_record& f) {
              scope t(self->state.probe, self);
              auto& s = self->state;
              journal::entry e;
              e.seq = journal_append(s, f);
              e.final = std::move(f);
              ++s.stats.total_queued;
              if (e.seq == 0) {  // memory is its only place: within the bound of memory
                if (s.pending.size() < s.ctx->cfg.persist_max_pending) {
                  ++s.unjournaled_finals;
                  s.pending.push_back(std::move(e));
                } else {
                  s.ctx->metrics->count("persist.lost_finals");
                  s.ctx->metrics->error("persistence: a final is lost: the journal fails and " +
                                        std::to_string(s.pending.size()) + " finals wait for the database");
                }
              } else if (s.pending.size() < s.ctx->cfg.persist_max_pending && !s.spilled) {
                s.last_in_memory = std::max(s.last_in_memory, e.seq);
                s.pending.push_back(std::move(e));
              } else {
                s.spilled = true;  // waits in the journal only
              }
              update_queue_length(s);
              if (s.pending.size() >= s.ctx->cfg.persist_batch) flush(self);
              arm_tick(self);
            },
            [self](usage_atom, usage_record& u) {
              scope t(self->state.probe, self);
              auto& s = self->state;
              journal::entry e;
              e.is_final = false;
              e.seq = journal_append(s, u);
              if (e.seq == 0) ++s.unjournaled_usage;
              e.usage = std::move(u);
              s.usage_pending.push_back(std::move(e));
              arm_tick(self);
            },
            [self](queue_atom) -> caf::typed_response_promise<queue_stats> {
              scope t(self->state.probe, self);
              auto& s = self->state;
              auto rp = self->make_response_promise<queue_stats>();
              // The database is busy with a batch (its outcome will tell), or was asked less than a second ago.
              if (s.writing || (s.ping_done_ms != 0 && now_ms() - s.ping_done_ms < 1000)) {
                rp.deliver(s.stats);
                return rp;
              }
              s.waiting.push_back(rp);
              ping(self);
              return rp;
            },
            [self](history_atom, transcript_query& q) -> caf::typed_response_promise<transcript_result> {
              scope t(self->state.probe, self);
              auto rp = self->make_response_promise<transcript_result>();
              auto& s = self->state;
              if (s.reads >= 16) {
                transcript_result r;
                r.error = "too many transcript reads are waiting for the database";
                rp.deliver(std::move(r));
                return rp;
              }
              ++s.reads;
              self->request(s.db, caf::infinite, history_atom::value, std::move(q))
                  .then(
                      [self, rp](transcript_result& r) mutable {
                        --self->state.reads;
                        rp.deliver(std::move(r));
                      },
                      [self, rp](caf::error& e) mutable {
                        --self->state.reads;
                        transcript_result r;
                        r.error = "database actor: " + self->system().render(e);
                        rp.deliver(std::move(r));
                      });
              return rp;
            },
            [self](tick_atom) {
              scope t(self->state.probe, self);
              auto& s = self->state;
              s.tick_armed = false;
              sync_journal(s);
              // The tick also serves the journal's fsync (every 100 ms); the database is written every
              // PERSIST_FLUSH_MS, or sooner when a full batch is waiting.
              bool due = now_ms() - s.last_flush_tick_ms >= s.ctx->cfg.persist_flush.count();
              if (due) s.last_flush_tick_ms = now_ms();
              if ((due && has_work(s)) || s.spilled || s.pending.size() >= s.ctx->cfg.persist_batch || s.shutdown ||
                  parked_retry_due(s))
                flush(self);
              update_queue_length(s);
              settle_shutdown(self);
              if (has_work(s) || has_parked(s)) arm_tick(self);
            },
            [self](timeout_atom) {
              scope t(self->state.probe, self);
              auto& s = self->state;
              if (s.pinging && now_ms() - s.ping_started_ms >= 1000) answer_waiting(s);
              settle_shutdown(self);
            },
            [self](shutdown_atom) -> caf::typed_response_promise<bool> {
              scope t(self->state.probe, self);
              auto& s = self->state;
              auto rp = self->make_response_promise<bool>();
              if (s.shutdown) {  // asked twice: the first question gets the answer
                rp.deliver(false);
                return rp;
              }
              s.shutdown = rp;
              s.shutdown_deadline_ms = now_ms() + s.ctx->cfg.shutdown_timeout.count();
              s.next_attempt_ms = 0;
              flush(self);
              // Answers at the bound even when the database actor is stuck in a call.
              self->delayed_send(self, s.ctx->cfg.shutdown_timeout, timeout_atom::value);
              settle_shutdown(self);
              return rp;
            },
        };
      },
      ctx);
}

}  // namespace sw
