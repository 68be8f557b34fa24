#include "actors/persistence.hpp"

#include <algorithm>
#include <deque>
#include <memory>

#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include "storage/journal.hpp"
#include "storage/repository.hpp"

namespace sw {

namespace {

struct persistence_state {
  static inline const char* name = "persistence";
  context_ptr ctx;
  std::unique_ptr<journal> jr;
  std::unique_ptr<repository> repo;
  std::deque<journal::entry> pending;        // finals in memory, oldest first
  std::deque<journal::entry> usage_pending;  // usage rows
  std::deque<journal::entry> parked;         // finals of rooms the web app's database does not know
  bool spilled = false;                      // some live finals are only in the journal
  std::uint64_t last_in_memory = 0;          // highest seq ever held in memory
  queue_stats stats;
  std::int64_t backoff_ms = 0;
  std::int64_t next_attempt_ms = 0;
  std::int64_t last_parked_retry_ms = 0;
  std::int64_t last_flush_tick_ms = 0;
  bool tick_armed = false;
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
  st.repo.reset();  // reconnect next time: the connection may be gone
  st.stats.database_ok = false;
}

bool ensure_repo(self_ptr self) {
  auto& st = self->state;
  if (st.repo) return true;
  try {
    auto r = repository::open(st.ctx->cfg.database_url, st.ctx->cfg.sqlite_path);
    r->migrate();
    st.stats.backend = r->backend();
    st.repo = std::move(r);
    st.stats.database_ok = true;
    return true;
  } catch (const std::exception& e) {
    note_error(self, e.what());
    return false;
  }
}

void arm_tick(self_ptr self) {
  auto& st = self->state;
  if (st.tick_armed) return;
  st.tick_armed = true;
  auto wait = std::min<std::int64_t>(100, st.ctx->cfg.persist_flush.count());  // fsync at least every 100 ms
  self->delayed_send(self, std::chrono::milliseconds(wait), tick_atom::value);
}

void refill_from_journal(persistence_state& st) {
  if (!st.spilled || st.pending.size() >= st.ctx->cfg.persist_max_pending / 2) return;
  auto more = st.jr->read_live(st.last_in_memory, st.ctx->cfg.persist_max_pending - st.pending.size());
  for (auto& e : more) {
    st.last_in_memory = std::max(st.last_in_memory, e.seq);
    st.pending.push_back(std::move(e));
  }
  if (more.empty()) st.spilled = false;
}

// Writes at most one batch of finals and the pending usage rows; false when the database failed.
bool flush_once(self_ptr self) {
  auto& st = self->state;
  if (now_ms() < st.next_attempt_ms || !ensure_repo(self)) return false;
  refill_from_journal(st);
  const auto& cfg = st.ctx->cfg;
  if (!st.parked.empty() && now_ms() - st.last_parked_retry_ms > 5000) {  // the web app may have created the room
    st.last_parked_retry_ms = now_ms();
    while (!st.parked.empty()) {
      st.pending.push_front(std::move(st.parked.back()));
      st.parked.pop_back();
    }
  }
  if (!st.pending.empty()) {
    auto n = std::min<std::size_t>(st.pending.size(), cfg.persist_batch);
    std::vector<final_record> rows;
    rows.reserve(n);
    for (std::size_t i = 0; i < n; ++i) rows.push_back(st.pending[i].final);
    auto started = std::chrono::steady_clock::now();
    try {
      auto unknown = st.repo->write_batch(rows);
      std::vector<std::uint64_t> done;
      std::size_t u = 0;
      for (std::size_t i = 0; i < n; ++i) {
        if (u < unknown.size() && unknown[u] == i) {
          ++u;
          st.parked.push_back(std::move(st.pending[i]));
          continue;
        }
        done.push_back(st.pending[i].seq);
      }
      if (!unknown.empty()) st.ctx->metrics->count("persist.unknown_session_rows", unknown.size());
      st.pending.erase(st.pending.begin(), st.pending.begin() + static_cast<std::ptrdiff_t>(n));
      st.jr->retire(done);
      st.stats.total_flushed += done.size();
      st.stats.last_flush_ms = now_ms();
      st.backoff_ms = 0;
      st.stats.database_ok = true;
      st.ctx->metrics->observe(
          "persist.batch_ms",
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count());
    } catch (const std::exception& e) {
      note_error(self, e.what());
      return false;
    }
  }
  while (!st.usage_pending.empty()) {
    try {
      st.repo->write_usage(st.usage_pending.front().usage, cfg.cost_per_minute);
      st.jr->retire({st.usage_pending.front().seq});
      st.usage_pending.pop_front();
    } catch (const std::exception& e) {
      note_error(self, e.what());
      return false;
    }
  }
  return true;
}

void update_queue_length(persistence_state& st) {
  st.stats.queue_length = st.jr->live() >= st.usage_pending.size() ? st.jr->live() - st.usage_pending.size() : 0;
}

}  // namespace

persistence_actor spawn_persistence(caf::actor_system& sys, context_ptr ctx) {
  return sys.spawn<caf::detached>(
      [](self_ptr self, context_ptr ctx) -> persistence_actor::behavior_type {
        auto& st = self->state;
        st.ctx = ctx;
        st.probe = actor_probe(ctx->metrics, "persistence");
        st.last_flush_tick_ms = now_ms();
        st.jr = std::make_unique<journal>(ctx->cfg.persist_journal_dir);
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
        ensure_repo(self);
        update_queue_length(st);
        arm_tick(self);
        using scope = probe_scope<std::remove_pointer_t<self_ptr>>;
        return {
            [self](final_atom, final_record& f) {
              scope t(self->state.probe, self);
              auto& s = self->state;
              journal::entry e;
              try {
                e.seq = s.jr->append(f);
              } catch (const std::exception& ex) {
                s.ctx->metrics->error("journal: " + std::string(ex.what()));
              }
              e.final = std::move(f);
              ++s.stats.total_queued;
              if (s.pending.size() < s.ctx->cfg.persist_max_pending && !s.spilled) {
                s.last_in_memory = std::max(s.last_in_memory, e.seq);
                s.pending.push_back(std::move(e));
              } else {
                s.spilled = true;  // waits in the journal only
              }
              update_queue_length(s);
              if (s.pending.size() >= s.ctx->cfg.persist_batch) flush_once(self), update_queue_length(s);
              arm_tick(self);
            },
            [self](usage_atom, usage_record& u) {
              scope t(self->state.probe, self);
              auto& s = self->state;
              journal::entry e;
              e.is_final = false;
              e.seq = s.jr->append(u);
              e.usage = std::move(u);
              s.usage_pending.push_back(std::move(e));
              arm_tick(self);
            },
            [self](queue_atom) -> queue_stats {
              scope t(self->state.probe, self);
              auto& s = self->state;
              if (s.repo) s.stats.database_ok = s.repo->ping();
              return s.stats;
            },
            [self](transcript_atom, const std::string& slug) -> transcript_result {
              scope t(self->state.probe, self);
              auto& s = self->state;
              transcript_result r;
              if (!ensure_repo(self)) {
                r.error = s.stats.last_error;
                return r;
              }
              try {
                r.segments = s.repo->transcript(slug, r.found);
              } catch (const std::exception& e) {
                r.error = e.what();
                note_error(self, e.what());
              }
              return r;
            },
            [self](tick_atom) {
              scope t(self->state.probe, self);
              auto& s = self->state;
              s.tick_armed = false;
              try {
                s.jr->sync();
              } catch (const std::exception& e) {
                s.ctx->metrics->error("journal: " + std::string(e.what()));
              }
              // The tick also serves the journal's fsync (every 100 ms); the database is written every
              // PERSIST_FLUSH_MS, or sooner when a full batch is waiting.
              bool due = now_ms() - s.last_flush_tick_ms >= s.ctx->cfg.persist_flush.count();
              if (due) s.last_flush_tick_ms = now_ms();
              while ((due && (!s.pending.empty() || !s.usage_pending.empty())) || s.spilled ||
                     s.pending.size() >= s.ctx->cfg.persist_batch) {
                if (!flush_once(self)) break;
                due = false;
              }
              update_queue_length(s);
              if (!s.pending.empty() || !s.usage_pending.empty() || !s.parked.empty() || s.spilled) arm_tick(self);
            },
            [self](shutdown_atom) -> bool {
              scope t(self->state.probe, self);
              auto& s = self->state;
              auto deadline = now_ms() + s.ctx->cfg.shutdown_timeout.count();
              s.next_attempt_ms = 0;
              while ((!s.pending.empty() || !s.usage_pending.empty() || s.spilled) && now_ms() < deadline) {
                if (!flush_once(self)) {
                  s.next_attempt_ms = 0;
                  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // detached: blocking is fine here
                }
              }
              try {
                s.jr->sync();
              } catch (const std::exception&) {
              }
              update_queue_length(s);
              return s.pending.empty() && s.usage_pending.empty() && !s.spilled;
            },
        };
      },
      ctx);
}

}  // namespace sw
