// The SOCI repository: the web app's four tables on SQLite or PostgreSQL. Used only by the persistence
// actor (actors/persistence.*), on its own thread: every call blocks.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "proto/messages.hpp"

namespace soci {
class session;
}

namespace sw {

struct storage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using stored_segment = transcript_segment;

class repository {
public:
  // DATABASE_URL: empty -> SQLite file `sqlite_default`; "sqlite3://db=PATH" or "sqlite://PATH"; postgresql:// or
  // postgres:// URLs go to libpq as they are. Throws storage_error.
  static std::unique_ptr<repository> open(const std::string& database_url,
                                          const std::string& sqlite_default = "./data/sessions.db");
  ~repository();

  const std::string& backend() const { return backend_; }  // "sqlite" | "postgresql"
  // Creates the tables when absent (versioned); leaves a database the web app manages untouched.
  void migrate();
  bool managed_by_web_app() const { return managed_; }

  // Upserts a batch in one transaction. Rows whose room does not exist on a web-app database (it cannot be
  // created without a Space) are returned by index and not written; everything else is committed or throws.
  std::vector<std::size_t> write_batch(const std::vector<final_record>& rows);
  // Writes one usage row; false (nothing written) when a web-app database does not know its room.
  bool write_usage(const usage_record& u, double cost_per_minute);
  // Stored finals of a room ordered by start, at most `limit` from `offset` on; found=false when the room is unknown,
  // more=true when it has finals after these.
  std::vector<stored_segment> transcript(const std::string& slug, std::uint64_t offset, std::uint32_t limit,
                                         bool& found, bool& more);
  bool ping();

private:
  repository() = default;
  std::string new_id();
  std::string session_id_for(const std::string& slug, bool create);
  bool table_exists(const std::string& name);

  std::unique_ptr<soci::session> sql_;
  std::string backend_;
  bool managed_ = false;
  std::map<std::string, std::string> session_ids_;  // slug -> VideoSession.id (bounded: cleared at 10 000)
  // (VideoSession.id, identity) -> Participant.id of participants whose name is set (it never changes again);
  // bounded: cleared at 10 000, and on any error
  std::map<std::pair<std::string, std::string>, std::string> participant_ids_;
  std::mt19937_64 rng_{std::random_device{}()};
  std::uint64_t counter_ = 0;
};

// A postgresql:// URL as a libpq keyword/value connection string.
std::string pg_conninfo(const std::string& url);

// "2026-11-26 10:00:00.123" (UTC), the format both backends store.
std::string sql_timestamp(std::int64_t ms);

}  // namespace sw
