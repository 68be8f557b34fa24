#include "storage/repository.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <filesystem>

#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include "proto/time.hpp"

namespace sw {

namespace {

// Version 1: the four tables, created only where they do not exist yet.
const char* const schema_v1[] = {
    R"(CREATE TABLE IF NOT EXISTS "VideoSession" ("id" TEXT PRIMARY KEY, "slug" TEXT NOT NULL UNIQUE, "title" TEXT,
    "status" TEXT NOT NULL DEFAULT 'CREATED', "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "startedAt" TIMESTAMP(3), "endedAt" TIMESTAMP(3), "lastActivityAt" TIMESTAMP(3), "spaceId" TEXT))",
    R"(CREATE TABLE IF NOT EXISTS "Participant" ("id" TEXT PRIMARY KEY, "videoSessionId" TEXT NOT NULL
    REFERENCES "VideoSession"("id"), "userId" TEXT, "identity" TEXT NOT NULL, "name" TEXT,
    "role" TEXT NOT NULL DEFAULT 'GUEST', "joinedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "leftAt" TIMESTAMP(3), UNIQUE ("videoSessionId", "identity")))",
    R"(CREATE TABLE IF NOT EXISTS "TranscriptSegment" ("id" TEXT PRIMARY KEY, "videoSessionId" TEXT NOT NULL
    REFERENCES "VideoSession"("id"), "participantId" TEXT, "utteranceId" TEXT NOT NULL, "text" TEXT NOT NULL,
    "language" TEXT, "isFinal" BOOLEAN NOT NULL DEFAULT false, "startedAt" TIMESTAMP(3) NOT NULL,
    "endedAt" TIMESTAMP(3), "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE ("videoSessionId", "utteranceId")))",
    R"(CREATE TABLE IF NOT EXISTS "TranscriptionUsage" ("id" TEXT PRIMARY KEY, "videoSessionId" TEXT NOT NULL,
    "participantId" TEXT, "userId" TEXT, "startedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "endedAt" TIMESTAMP(3), "durationSeconds" INTEGER NOT NULL, "durationMinutes" INTEGER NOT NULL,
    "audioChunksSent" INTEGER NOT NULL DEFAULT 0, "transcriptsReceived" INTEGER NOT NULL DEFAULT 0,
    "finalTranscripts" INTEGER NOT NULL DEFAULT 0, "partialTranscripts" INTEGER NOT NULL DEFAULT 0,
    "costPerMinute" DOUBLE PRECISION NOT NULL DEFAULT 0.01, "totalCost" DOUBLE PRECISION NOT NULL DEFAULT 0,
    "errorsCount" INTEGER NOT NULL DEFAULT 0, "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL))",
    R"(CREATE INDEX IF NOT EXISTS "TranscriptSegment_videoSessionId_idx" ON "TranscriptSegment" ("videoSessionId"))",
};

std::string iso(const std::string& sql_ts) {  // "2026-11-26 10:00:00.123" -> "2026-11-26T10:00:00.123Z"
  if (sql_ts.empty()) return {};
  std::string s = sql_ts;
  if (s.size() > 10 && s[10] == ' ') s[10] = 'T';
  auto plus = s.find('+', 10);
  if (plus != std::string::npos) s.erase(plus);
  if (!s.empty() && s.back() == 'Z') s.pop_back();
  // always milliseconds: PostgreSQL drops a zero fraction, SQLite keeps what was stored
  auto dot = s.find('.', 10);
  if (dot == std::string::npos) {
    s += ".000";
  } else {
    while (s.size() - dot < 4) s += '0';
    s.erase(dot + 4);
  }
  return s + 'Z';
}

std::string decode(const std::string& in) {
  std::string out;
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size()) {
      out.push_back(static_cast<char>(std::stoi(in.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(in[i]);
    }
  }
  return out;
}

std::string quote(const std::string& v) {  // libpq keyword/value quoting
  std::string out = "'";
  for (char c : v) {
    if (c == '\\' || c == '\'') out.push_back('\\');
    out.push_back(c);
  }
  return out + "'";
}

}  // namespace

// postgresql://user:password@host:port/dbname?key=value -> "host='..' port='..' dbname='..' ..." (SOCI 4.0 does
// not hand URIs to libpq unchanged).
std::string pg_conninfo(const std::string& url) {
  auto rest = url.substr(url.find("://") + 3);
  std::string query;
  if (auto q = rest.find('?'); q != std::string::npos) {
    query = rest.substr(q + 1);
    rest.erase(q);
  }
  std::string db;
  if (auto slash = rest.find('/'); slash != std::string::npos) {
    db = rest.substr(slash + 1);
    rest.erase(slash);
  }
  std::string user, password;
  if (auto at = rest.rfind('@'); at != std::string::npos) {
    user = rest.substr(0, at);
    rest.erase(0, at + 1);
    if (auto colon = user.find(':'); colon != std::string::npos) {
      password = user.substr(colon + 1);
      user.erase(colon);
    }
  }
  std::string host = rest, port;
  if (!host.empty() && host.front() == '[') {
    auto close = host.find(']');
    port = close + 1 < host.size() && host[close + 1] == ':' ? host.substr(close + 2) : "";
    host = host.substr(1, close - 1);
  } else if (auto colon = host.rfind(':'); colon != std::string::npos) {
    port = host.substr(colon + 1);
    host.erase(colon);
  }
  std::string out;
  auto add = [&](const char* k, const std::string& v) {
    if (!v.empty()) out += std::string(out.empty() ? "" : " ") + k + "=" + quote(decode(v));
  };
  add("host", host);
  add("port", port);
  add("dbname", db);
  add("user", user);
  add("password", password);
  std::size_t pos = 0;
  while (pos < query.size()) {
    auto amp = query.find('&', pos);
    auto pair = query.substr(pos, amp == std::string::npos ? std::string::npos : amp - pos);
    pos = amp == std::string::npos ? query.size() : amp + 1;
    auto eq = pair.find('=');
    if (eq == std::string::npos) continue;
    auto key = decode(pair.substr(0, eq));
    if (key.find_first_not_of("abcdefghijklmnopqrstuvwxyz_") != std::string::npos) continue;
    add(key.c_str(), pair.substr(eq + 1));
  }
  return out;
}

repository::~repository() = default;

std::unique_ptr<repository> repository::open(const std::string& url, const std::string& sqlite_default) {
  std::unique_ptr<repository> r(new repository);
  r->sql_ = std::make_unique<soci::session>();
  try {
    if (url.rfind("postgresql://", 0) == 0 || url.rfind("postgres://", 0) == 0) {
      r->backend_ = "postgresql";
      // Bounded waits when the server is unreachable or a connection goes silent; values in the URL win (libpq
      // takes the last occurrence of a keyword).
      r->sql_->open(soci::postgresql,
                    "connect_timeout=5 tcp_user_timeout=20000 keepalives_idle=15 "
                    "keepalives_interval=5 keepalives_count=3 " +
                        pg_conninfo(url));
      *r->sql_ << "SET client_min_messages = warning";
    } else {
      std::string path = sqlite_default;
      if (url.rfind("sqlite3://db=", 0) == 0)
        path = url.substr(13);
      else if (url.rfind("sqlite://", 0) == 0)
        path = url.substr(9);
      else if (!url.empty())
        throw storage_error("DATABASE_URL must start with postgresql://, postgres:// or sqlite3://");
      auto dir = std::filesystem::path(path).parent_path();
      if (!dir.empty()) std::filesystem::create_directories(dir);
      r->backend_ = "sqlite";
      r->sql_->open(soci::sqlite3, "db=" + path + " timeout=5");
      *r->sql_ << "PRAGMA journal_mode=WAL";
      *r->sql_ << "PRAGMA synchronous=NORMAL";
      *r->sql_ << "PRAGMA foreign_keys=ON";
    }
  } catch (const storage_error&) {
    throw;
  } catch (const std::exception& e) {
    throw storage_error("cannot open the database: " + std::string(e.what()));
  }
  return r;
}

bool repository::table_exists(const std::string& name) {
  int n = 0;
  if (backend_ == "sqlite") {
    *sql_ << "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = :n", soci::use(name), soci::into(n);
  } else {
    *sql_ << "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = :n",
        soci::use(name), soci::into(n);
  }
  return n > 0;
}

void repository::migrate() {
  soci::transaction tr(*sql_);
  // Instances sharing one PostgreSQL database start together: one at a time looks and migrates (a lock held to
  // the end of this transaction), so none takes another's half-made tables for the web app's.
  if (sql_->get_backend_name() == "postgresql") *sql_ << "SELECT pg_advisory_xact_lock(2026120117)";
  bool ours = table_exists("sessions_ws_migrations");
  if (!ours && table_exists("VideoSession")) {
    managed_ = true;  // the web app's database: use the tables as they are
    tr.commit();
    return;
  }
  *sql_ << "CREATE TABLE IF NOT EXISTS sessions_ws_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)";
  int applied = 0;
  *sql_ << "SELECT count(*) FROM sessions_ws_migrations WHERE version = 1", soci::into(applied);
  if (!applied) {
    for (auto stmt : schema_v1) *sql_ << stmt;
    std::string now = sql_timestamp(static_cast<std::int64_t>(std::time(nullptr)) * 1000);
    *sql_ << "INSERT INTO sessions_ws_migrations (version, applied_at) VALUES (1, :t)", soci::use(now);
  }
  tr.commit();
}

std::string repository::new_id() {
  // cuid-like: 'c', time in base 36, a counter and 64 random bits: collision-resistant across processes.
  static const char* digits = "0123456789abcdefghijklmnopqrstuvwxyz";
  auto base36 = [&](std::uint64_t v, std::size_t width) {
    std::string s(width, '0');
    for (std::size_t i = width; i-- > 0; v /= 36) s[i] = digits[v % 36];
    return s;
  };
  auto ms = static_cast<std::uint64_t>(std::time(nullptr)) * 1000;
  return "c" + base36(ms, 8) + base36(counter_++ % (36ULL * 36 * 36 * 36), 4) + base36(rng_(), 12);
}

std::string repository::session_id_for(const std::string& slug, bool create) {
  if (auto it = session_ids_.find(slug); it != session_ids_.end()) return it->second;
  std::string id;
  soci::indicator ind = soci::i_null;
  *sql_ << R"(SELECT "id" FROM "VideoSession" WHERE "slug" = :s)", soci::use(slug), soci::into(id, ind);
  if (ind != soci::i_ok) {
    if (!create) return {};
    id = new_id();
    std::string now = sql_timestamp(static_cast<std::int64_t>(std::time(nullptr)) * 1000);
    *sql_
        << R"(INSERT INTO "VideoSession" ("id", "slug", "status", "createdAt", "startedAt") VALUES (:i, :s, 'LIVE', :c, :c2)
               ON CONFLICT ("slug") DO NOTHING)",
        soci::use(id), soci::use(slug), soci::use(now), soci::use(now);
    *sql_ << R"(SELECT "id" FROM "VideoSession" WHERE "slug" = :s)", soci::use(slug), soci::into(id);
  }
  if (session_ids_.size() > 10'000) session_ids_.clear();
  session_ids_[slug] = id;
  return id;
}

std::vector<std::size_t> repository::write_batch(const std::vector<final_record>& rows) {
  // The columns of one segment upsert, in statement order: id, videoSessionId, participantId, utteranceId, text,
  // language, startedAt, endedAt.
  constexpr std::size_t cols = 8;
  std::vector<std::array<std::string, cols>> segs;
  std::vector<std::size_t> unknown;
  try {
    soci::transaction tr(*sql_);
    std::map<std::pair<std::string, std::string>, std::string> participants;
    segs.reserve(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      const auto& t = r.transcript;
      auto vs = session_id_for(t.session_slug, !managed_);
      if (vs.empty()) {
        unknown.push_back(i);
        continue;
      }
      auto key = std::make_pair(vs, t.speaker_id);
      auto pit = participants.find(key);
      if (auto known = participant_ids_.find(key); pit == participants.end() && known != participant_ids_.end())
        pit = participants.emplace(key, known->second).first;
      if (pit == participants.end()) {
        std::string pid = new_id(), got, name;
        soci::indicator name_ind = soci::i_null;
        std::string joined = sql_timestamp(r.stream_started_ms);
        // The name is set once: never overwrite a name the web app (or an earlier stream) stored.
        *sql_ << R"(INSERT INTO "Participant" ("id", "videoSessionId", "identity", "name", "role", "joinedAt")
                   VALUES (:i, :v, :ident, :n, 'GUEST', :j)
                   ON CONFLICT ("videoSessionId", "identity") DO UPDATE SET "name" =
                   CASE WHEN "Participant"."name" IS NULL OR "Participant"."name" = '' THEN excluded."name"
                   ELSE "Participant"."name" END
                   RETURNING "id", "name")",
            soci::use(pid), soci::use(vs), soci::use(t.speaker_id), soci::use(t.speaker_name), soci::use(joined),
            soci::into(got), soci::into(name, name_ind);
        pit = participants.emplace(key, got).first;
        if (name_ind == soci::i_ok && !name.empty()) {  // final: later streams need not ask again
          if (participant_ids_.size() > 10'000) participant_ids_.clear();
          participant_ids_.emplace(key, got);
        }
      }
      segs.push_back({new_id(), vs, pit->second, t.utterance_id, t.text, t.language,
                      sql_timestamp(r.stream_started_ms + static_cast<std::int64_t>(std::llround(t.start * 1000))),
                      sql_timestamp(r.stream_started_ms + static_cast<std::int64_t>(std::llround(t.end * 1000)))});
    }
    const std::string created = sql_timestamp(static_cast<std::int64_t>(std::time(nullptr)) * 1000);
    const char* const head = R"(INSERT INTO "TranscriptSegment" ("id", "videoSessionId", "participantId",
        "utteranceId", "text", "language", "startedAt", "endedAt", "isFinal", "createdAt") VALUES )";
    const char* const tail = R"( ON CONFLICT ("videoSessionId", "utteranceId") DO UPDATE SET "text" = excluded."text",
        "language" = excluded."language", "isFinal" = excluded."isFinal", "startedAt" = excluded."startedAt",
        "endedAt" = excluded."endedAt", "participantId" = excluded."participantId")";
    if (backend_ == "postgresql") {
      // One multi-row upsert per chunk: a round trip per chunk instead of per row. One statement must not touch
      // a row twice, so of the same utterance only the latest text goes in (what row-by-row upserts would leave).
      std::map<std::pair<std::string, std::string>, std::size_t> latest;
      for (std::size_t i = 0; i < segs.size(); ++i) latest[{segs[i][1], segs[i][3]}] = i;
      std::vector<std::size_t> order;
      for (std::size_t i = 0; i < segs.size(); ++i)
        if (latest[{segs[i][1], segs[i][3]}] == i) order.push_back(i);
      constexpr std::size_t chunk = 500;  // 8 parameters a row; PostgreSQL allows 65 535 per statement
      for (std::size_t from = 0; from < order.size(); from += chunk) {
        std::size_t to = std::min(order.size(), from + chunk);
        std::string sql = head;
        soci::statement st(*sql_);
        for (std::size_t k = from; k < to; ++k) {
          sql += k == from ? "(" : ",(";
          for (std::size_t c = 0; c < cols; ++c) {
            sql += ":p" + std::to_string((k - from) * cols + c) + ",";
            st.exchange(soci::use(segs[order[k]][c]));
          }
          sql += "TRUE,'" + created + "')";  // our own digits: a literal, so every placeholder is bound once
        }
        st.alloc();
        st.prepare(sql + tail);
        st.define_and_bind();
        st.execute(true);
      }
    } else {
      // SQLite is in-process: one prepared statement, executed per row.
      std::array<std::string, cols> v;
      int is_final = 1;
      soci::statement seg =
          (sql_->prepare << std::string(head) + "(:i, :v, :p, :u, :t, :l, :s, :e, :f, :c)" + tail, soci::use(v[0]),
           soci::use(v[1]), soci::use(v[2]), soci::use(v[3]), soci::use(v[4]), soci::use(v[5]), soci::use(v[6]),
           soci::use(v[7]), soci::use(is_final), soci::use(created));
      for (auto& row : segs) {
        v = row;
        seg.execute(true);
      }
    }
    tr.commit();
  } catch (const std::exception& e) {
    session_ids_.clear();
    participant_ids_.clear();
    throw storage_error(e.what());
  }
  return unknown;
}

bool repository::write_usage(const usage_record& u, double cost_per_minute) {
  try {
    auto vs = session_id_for(u.session_slug, !managed_);
    if (vs.empty()) return false;
    std::string pid;
    soci::indicator pind = soci::i_null;
    *sql_ << R"(SELECT "id" FROM "Participant" WHERE "videoSessionId" = :v AND "identity" = :i)", soci::use(vs),
        soci::use(u.identity), soci::into(pid, pind);
    long long seconds = std::max<std::int64_t>(0, (u.ended_ms - u.started_ms) / 1000);
    long long minutes = (seconds + 59) / 60;
    double total = static_cast<double>(minutes) * cost_per_minute;
    std::string id = new_id(), s = sql_timestamp(u.started_ms), e = sql_timestamp(u.ended_ms);
    long long chunks = static_cast<long long>(u.audio_chunks), tr = static_cast<long long>(u.transcripts),
              fin = static_cast<long long>(u.finals), par = static_cast<long long>(u.partials),
              err = static_cast<long long>(u.errors);
    soci::indicator pid_ind = pind == soci::i_ok ? soci::i_ok : soci::i_null;
    *sql_ << R"(INSERT INTO "TranscriptionUsage" ("id", "videoSessionId", "participantId", "startedAt", "endedAt",
               "durationSeconds", "durationMinutes", "audioChunksSent", "transcriptsReceived", "finalTranscripts",
               "partialTranscripts", "costPerMinute", "totalCost", "errorsCount", "createdAt", "updatedAt")
               VALUES (:id, :v, :p, :s, :e, :ds, :dm, :a, :t, :f, :pa, :c, :tc, :er, :e2, :e3))",
        soci::use(id), soci::use(vs), soci::use(pid, pid_ind), soci::use(s), soci::use(e), soci::use(seconds),
        soci::use(minutes), soci::use(chunks), soci::use(tr), soci::use(fin), soci::use(par),
        soci::use(cost_per_minute), soci::use(total), soci::use(err), soci::use(e), soci::use(e);
    return true;
  } catch (const std::exception& ex) {
    session_ids_.clear();
    throw storage_error(ex.what());
  }
}

std::vector<stored_segment> repository::transcript(const std::string& slug, std::uint64_t offset, std::uint32_t limit,
                                                   bool& found, bool& more) {
  std::vector<stored_segment> out;
  more = false;
  try {
    found = !session_id_for(slug, false).empty();
    if (!found || limit == 0) return out;
    // one more than asked: whether the room has finals after this page
    const long long rows = static_cast<long long>(limit) + 1,
                    skip = static_cast<long long>(std::min<std::uint64_t>(offset, INT64_MAX));
    soci::rowset<soci::row> rs = (sql_->prepare << R"(SELECT s."utteranceId", COALESCE(p."identity", ''),
        COALESCE(p."name", ''), s."text", COALESCE(s."language", ''), CAST(s."startedAt" AS TEXT),
        COALESCE(CAST(s."endedAt" AS TEXT), '')
        FROM "TranscriptSegment" s JOIN "VideoSession" v ON v."id" = s."videoSessionId"
        LEFT JOIN "Participant" p ON p."id" = s."participantId"
        WHERE v."slug" = :slug ORDER BY s."startedAt", s."createdAt", s."utteranceId" LIMIT :n OFFSET :o)",
                                  soci::use(slug), soci::use(rows), soci::use(skip));
    for (auto& r : rs) {
      if (out.size() == limit) {
        more = true;
        break;
      }
      stored_segment s;
      s.utterance_id = r.get<std::string>(0);
      s.speaker_id = r.get<std::string>(1);
      s.speaker_name = r.get<std::string>(2);
      s.text = r.get<std::string>(3);
      s.language = r.get<std::string>(4);
      s.started_at = iso(r.get<std::string>(5));
      s.ended_at = iso(r.get<std::string>(6));
      out.push_back(std::move(s));
    }
  } catch (const std::exception& e) {
    session_ids_.clear();
    throw storage_error(e.what());
  }
  return out;
}

bool repository::ping() {
  try {
    int one = 0;
    *sql_ << "SELECT 1", soci::into(one);
    return one == 1;
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace sw
