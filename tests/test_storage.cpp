// storage/ (repository, journal) and the persistence actor, on SQLite and on PostgreSQL (script/test starts
// a throwaway PostgreSQL 15 cluster and exports SESSIONS_WS_TEST_PG).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>
#include <soci/sqlite3/soci-sqlite3.h>

#include "proto/journal_line.hpp"
#include "storage/journal.hpp"
#include "storage/repository.hpp"
#include "tests/fakes/fake_gladia.hpp"
#include "tests/support/harness.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using sw::test::field;

// A fresh, empty database per test: a temp SQLite file, or a new schema in the test cluster.
struct fresh_db {
  std::string url, dir;
  explicit fresh_db(const std::string& backend) {
    static int n = 0;
    dir = (fs::temp_directory_path() / ("sw-db-" + std::to_string(::getpid()) + "-" + std::to_string(n++))).string();
    fs::create_directories(dir);
    if (backend == "sqlite") {
      url = "sqlite3://db=" + dir + "/test.db";
      return;
    }
    const char* pg = std::getenv("SESSIONS_WS_TEST_PG");
    if (!pg) return;
    std::string schema = "t_" + std::to_string(::getpid()) + "_" + std::to_string(n);
    soci::session s(soci::postgresql, sw::pg_conninfo(pg));
    s << "DROP SCHEMA IF EXISTS " + schema + " CASCADE";
    s << "CREATE SCHEMA " + schema;
    url = std::string(pg) + "?options=-csearch_path%3D" + schema;
  }
  std::unique_ptr<soci::session> connect() const {
    if (url.rfind("sqlite3://db=", 0) == 0)
      // The service writes the same file meanwhile: wait out its write lock instead of failing "database is locked"
      return std::make_unique<soci::session>(soci::sqlite3, "db=" + url.substr(13) + " timeout=10");
    return std::make_unique<soci::session>(soci::postgresql, sw::pg_conninfo(url));
  }
  ~fresh_db() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  void exec(const std::string& sql) const {
    auto sp = connect();
    auto& s = *sp;
    s << sql;
  }
  long long count(const std::string& sql) const {
    auto sp = connect();
    auto& s = *sp;
    long long n = -1;
    s << sql, soci::into(n);
    return n;
  }
  // count() that answers -1 while the table does not exist yet (the service migrates asynchronously)
  long long count_or_none(const std::string& sql) const {
    try {
      return count(sql);
    } catch (const std::exception&) {
      return -1;
    }
  }
  std::string text(const std::string& sql) const {
    auto sp = connect();
    auto& s = *sp;
    std::string v;
    soci::indicator ind;
    s << sql, soci::into(v, ind);
    return ind == soci::i_ok ? v : "<null>";
  }
};

sw::final_record final_of(const std::string& slug, const std::string& utt, const std::string& text,
                          const std::string& who = "alice", const std::string& name = "Alice", double start = 0) {
  sw::final_record f;
  f.transcript = {slug, utt, text, true, who, name, "en", start, start + 1};
  f.stream_started_ms = 1'790'000'000'000;
  return f;
}

// The journal's segment files, oldest first, and their total size.
std::vector<std::string> journal_segments(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& f : fs::directory_iterator(dir, ec)) {
    auto name = f.path().filename().string();
    if (name.rfind("rows.", 0) == 0 && name.size() > 8 && name.compare(name.size() - 8, 8, ".journal") == 0)
      out.push_back(f.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::uint64_t journal_size(const std::string& dir) {
  std::uint64_t n = 0;
  for (auto& f : journal_segments(dir)) n += fs::file_size(f);
  return n;
}

class Storage : public ::testing::TestWithParam<std::string> {
protected:
  void SetUp() override {
    if (GetParam() == "postgresql" && !std::getenv("SESSIONS_WS_TEST_PG")) {
      if (std::getenv("CI")) FAIL() << "SESSIONS_WS_TEST_PG is not set: run through script/test";
      GTEST_SKIP() << "no PostgreSQL test cluster (run through script/test)";
    }
    db = std::make_unique<fresh_db>(GetParam());
  }
  std::unique_ptr<sw::repository> open() {
    auto url = db->url.rfind("sqlite3://db=", 0) == 0 ? std::string{} : db->url;
    auto r = sw::repository::open(url, db->url.rfind("sqlite3://db=", 0) == 0 ? db->url.substr(13) : "");
    r->migrate();
    return r;
  }
  std::unique_ptr<fresh_db> db;
};

TEST_P(Storage, SameUtteranceTwiceIsOneRowWithTheLatestText) {
  auto r = open();
  EXPECT_TRUE(r->write_batch({final_of("room", "k-u1", "hello"), final_of("room", "k-u1", "hello world")}).empty());
  EXPECT_EQ(db->text(R"(SELECT "text" FROM "TranscriptSegment")"), "hello world");  // within one batch too
  r->write_batch({final_of("room", "k-u1", "hello world!")});
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "TranscriptSegment")"), 1);
  EXPECT_EQ(db->text(R"(SELECT "text" FROM "TranscriptSegment")"), "hello world!");
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "VideoSession" WHERE "slug" = 'room' AND "status" = 'LIVE')"), 1);
}

TEST_P(Storage, ABatchLargerThanOneStatementKeepsEveryRowAndEveryCharacter) {
  auto r = open();
  const std::string odd = "it's a \"quote\", a back\\slash, $1 :p0 ?, 'x'); DROP TABLE x; -- and ünïcödé ✓";
  std::vector<sw::final_record> rows;
  for (int i = 0; i < 1'234; ++i)  // more rows than one multi-row statement takes
    rows.push_back(final_of(i % 2 ? "room-a" : "room-b", "k-u" + std::to_string(i), odd + std::to_string(i),
                            "p" + std::to_string(i % 7), "Person " + std::to_string(i % 7), i * 0.25));
  EXPECT_TRUE(r->write_batch(rows).empty());
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "TranscriptSegment")"), 1'234);
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "Participant")"), 14);
  EXPECT_EQ(db->text(R"(SELECT "text" FROM "TranscriptSegment" WHERE "utteranceId" = 'k-u1233')"), odd + "1233");
  EXPECT_EQ(db->text(R"(SELECT "text" FROM "TranscriptSegment" WHERE "utteranceId" = 'k-u0')"), odd + "0");
}

TEST_P(Storage, ParticipantNameIsSetOnceAndNeverOverwritten) {
  auto r = open();
  r->write_batch({final_of("room", "u1", "a", "alice", "Alice Liddell")});
  r->write_batch({final_of("room", "u2", "b", "alice", "")});
  r->write_batch({final_of("room", "u3", "c", "alice", "alice")});
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "Participant")"), 1);
  EXPECT_EQ(db->text(R"(SELECT "name" FROM "Participant")"), "Alice Liddell");
}

TEST_P(Storage, AnEmptyNameIsFilledLater) {
  auto r = open();
  r->write_batch({final_of("room", "u1", "a", "bob", "")});
  r->write_batch({final_of("room", "u2", "b", "bob", "Bob")});
  EXPECT_EQ(db->text(R"(SELECT "name" FROM "Participant")"), "Bob");
}

TEST_P(Storage, UsageRow) {
  auto r = open();
  r->write_batch({final_of("room", "u1", "a")});
  sw::usage_record u{"room", "", "alice", 1'790'000'000'000, 1'790'000'061'000, 30, 12, 4, 8, 1};
  r->write_usage(u, 0.01);
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "TranscriptionUsage")"), 1);
  EXPECT_EQ(db->count(R"(SELECT "durationSeconds" FROM "TranscriptionUsage")"), 61);
  EXPECT_EQ(db->count(R"(SELECT "durationMinutes" FROM "TranscriptionUsage")"), 2);
  EXPECT_EQ(db->count(R"(SELECT "audioChunksSent" FROM "TranscriptionUsage")"), 30);
  EXPECT_EQ(db->count(R"(SELECT CAST(ROUND(CAST("totalCost" * 100 AS NUMERIC)) AS INTEGER) FROM "TranscriptionUsage")"),
            2);
  EXPECT_EQ(
      db->count(R"(SELECT count(*) FROM "TranscriptionUsage" u JOIN "Participant" p ON p."id" = u."participantId")"),
      1);
}

TEST_P(Storage, TranscriptIsOrderedByStart) {
  auto r = open();
  r->write_batch(
      {final_of("room", "u2", "second", "bob", "Bob", 5), final_of("room", "u1", "first", "alice", "Alice", 1)});
  bool found = false, more = true;
  auto t = r->transcript("room", 0, sw::transcript_page_max, found, more);
  ASSERT_TRUE(found);
  EXPECT_FALSE(more);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].text, "first");
  EXPECT_EQ(t[0].speaker_name, "Alice");
  EXPECT_EQ(t[1].speaker_id, "bob");
  EXPECT_EQ(t[0].started_at, "2026-09-21T14:13:21.000Z");
  r->transcript("nowhere", 0, sw::transcript_page_max, found, more);
  EXPECT_FALSE(found);
}

// A room's transcript comes in pages: each holds at most what was asked, says whether more follow, and the pages
// together hold every final once, in the order of start.
TEST_P(Storage, TranscriptPagesHoldEveryFinalOnceInOrder) {
  auto r = open();
  std::vector<sw::final_record> rows;
  for (int i = 0; i < 25; ++i)  // written out of order
    rows.push_back(final_of("room", "u" + std::to_string(i), "t" + std::to_string(i), "alice", "Alice", (i * 7) % 25));
  r->write_batch(rows);
  std::vector<std::string> texts;
  bool found = false, more = true;
  std::uint64_t offset = 0;
  int pages = 0;
  while (more) {
    auto page = r->transcript("room", offset, 10, found, more);
    ASSERT_TRUE(found);
    ASSERT_LE(page.size(), 10u);
    ASSERT_EQ(more, offset + 10 < 25) << offset;
    for (auto& s : page) texts.push_back(s.started_at);
    offset += page.size();
    ASSERT_LT(++pages, 10);
  }
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(texts.size(), 25u);
  EXPECT_TRUE(std::is_sorted(texts.begin(), texts.end()));
  EXPECT_EQ(std::set<std::string>(texts.begin(), texts.end()).size(), 25u) << "each final once";
  EXPECT_TRUE(r->transcript("room", 25, 10, found, more).empty());
  EXPECT_TRUE(found);
  EXPECT_FALSE(more);
  EXPECT_TRUE(r->transcript("room", 1'000'000'000'000, 10, found, more).empty());
}

TEST_P(Storage, MigrationsAreVersionedAndIdempotent) {
  open();
  open();
  EXPECT_EQ(db->count("SELECT count(*) FROM sessions_ws_migrations"), 1);
}

// The web app's tables, as Prisma creates them (reference-system.md §5.1): used as they are.
void create_web_app_schema(const fresh_db& db, bool pg) {
  std::string ts = "TIMESTAMP(3)";
  if (pg) {
    db.exec(R"(CREATE TYPE "SessionStatus" AS ENUM ('CREATED', 'LIVE', 'ENDED', 'EXPIRED'))");
    db.exec(R"(CREATE TYPE "ParticipantRole" AS ENUM ('HOST', 'GUEST'))");
  }
  std::string status = pg ? R"("SessionStatus")" : "TEXT", role = pg ? R"("ParticipantRole")" : "TEXT";
  db.exec(R"(CREATE TABLE "Space" ("id" TEXT NOT NULL PRIMARY KEY, "name" TEXT NOT NULL))");
  db.exec(
      R"(CREATE TABLE "VideoSession" ("id" TEXT NOT NULL, "slug" TEXT NOT NULL, "title" TEXT, "createdByUserId" TEXT,
    "status" )" +
      status + R"( NOT NULL DEFAULT 'CREATED', "createdAt" )" + ts + R"( NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "startedAt" )" +
      ts + R"(, "endedAt" )" + ts + R"(, "lastActivityAt" )" + ts + R"(, "spaceId" TEXT NOT NULL,
    "rawTranscriptBlobUrl" TEXT, "rawTranscriptSizeBytes" INTEGER, "rawTranscriptReadyAt" )" +
      ts + R"(,
    CONSTRAINT "VideoSession_pkey" PRIMARY KEY ("id")))");
  db.exec(R"(CREATE UNIQUE INDEX "VideoSession_slug_key" ON "VideoSession"("slug"))");
  db.exec(R"(CREATE TABLE "Participant" ("id" TEXT NOT NULL, "videoSessionId" TEXT NOT NULL, "userId" TEXT,
    "identity" TEXT NOT NULL, "name" TEXT, "role" )" +
          role + R"( NOT NULL DEFAULT 'GUEST',
    "joinedAt" )" +
          ts + R"( NOT NULL DEFAULT CURRENT_TIMESTAMP, "leftAt" )" + ts + R"(,
    CONSTRAINT "Participant_pkey" PRIMARY KEY ("id")))");
  db.exec(
      R"(CREATE UNIQUE INDEX "Participant_videoSessionId_identity_key" ON "Participant"("videoSessionId", "identity"))");
  db.exec(R"(CREATE TABLE "TranscriptSegment" ("id" TEXT NOT NULL, "videoSessionId" TEXT NOT NULL, "participantId" TEXT,
    "utteranceId" TEXT NOT NULL, "text" TEXT NOT NULL, "language" TEXT, "isFinal" BOOLEAN NOT NULL DEFAULT false,
    "startedAt" )" +
          ts + R"( NOT NULL, "endedAt" )" + ts + R"(, "createdAt" )" + ts + R"( NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "TranscriptSegment_pkey" PRIMARY KEY ("id")))");
  db.exec(
      R"(CREATE UNIQUE INDEX "TranscriptSegment_videoSessionId_utteranceId_key" ON "TranscriptSegment"("videoSessionId", "utteranceId"))");
  db.exec(
      R"(CREATE TABLE "TranscriptionUsage" ("id" TEXT NOT NULL, "videoSessionId" TEXT NOT NULL, "participantId" TEXT,
    "userId" TEXT, "startedAt" )" +
      ts + R"( NOT NULL DEFAULT CURRENT_TIMESTAMP, "endedAt" )" + ts + R"(,
    "durationSeconds" INTEGER NOT NULL, "durationMinutes" INTEGER NOT NULL, "audioChunksSent" INTEGER NOT NULL DEFAULT 0,
    "transcriptsReceived" INTEGER NOT NULL DEFAULT 0, "finalTranscripts" INTEGER NOT NULL DEFAULT 0,
    "partialTranscripts" INTEGER NOT NULL DEFAULT 0, "costPerMinute" DOUBLE PRECISION NOT NULL DEFAULT 0.01,
    "totalCost" DOUBLE PRECISION NOT NULL DEFAULT 0, "errorsCount" INTEGER NOT NULL DEFAULT 0,
    "createdAt" )" +
      ts + R"( NOT NULL DEFAULT CURRENT_TIMESTAMP, "updatedAt" )" + ts + R"( NOT NULL,
    CONSTRAINT "TranscriptionUsage_pkey" PRIMARY KEY ("id")))");
  db.exec(R"(INSERT INTO "Space" ("id", "name") VALUES ('space-1', 'Team'))");
  db.exec(
      R"(INSERT INTO "VideoSession" ("id", "slug", "spaceId", "status") VALUES ('vs-known', 'known-room', 'space-1', 'LIVE'))");
  db.exec(
      R"(INSERT INTO "Participant" ("id", "videoSessionId", "identity", "name", "role") VALUES ('p-1', 'vs-known', 'alice', 'Alice From The App', 'HOST'))");
}

TEST_P(Storage, WebAppSchemaIsUsedAsIsAndUnknownRoomsAreNotCreated) {
  create_web_app_schema(*db, GetParam() == "postgresql");
  auto r = open();
  EXPECT_TRUE(r->managed_by_web_app());
  auto unknown =
      r->write_batch({final_of("known-room", "u1", "hi", "alice", "alice"), final_of("ghost-room", "u1", "boo")});
  ASSERT_EQ(unknown.size(), 1u);
  EXPECT_EQ(unknown[0], 1u);
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "TranscriptSegment" WHERE "videoSessionId" = 'vs-known')"), 1);
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "VideoSession")"), 1);
  EXPECT_EQ(db->text(R"(SELECT "name" FROM "Participant" WHERE "identity" = 'alice')"), "Alice From The App");
  EXPECT_EQ(db->text(R"(SELECT CAST("role" AS TEXT) FROM "Participant" WHERE "identity" = 'alice')"), "HOST");
  EXPECT_EQ(db->count("SELECT count(*) FROM " +
                      std::string(GetParam() == "sqlite"
                                      ? "sqlite_master WHERE name = 'sessions_ws_migrations'"
                                      : "information_schema.tables WHERE table_name = 'sessions_ws_migrations' AND "
                                        "table_schema = current_schema()")),
            0);
}

INSTANTIATE_TEST_SUITE_P(Backends, Storage, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

TEST(PgUrl, BecomesAKeywordValueConnectionString) {
  EXPECT_EQ(sw::pg_conninfo("postgresql://u%40x:p%27w@db.example:5433/app?sslmode=require&options=-csearch_path%3Ds"),
            "host='db.example' port='5433' dbname='app' user='u@x' password='p\\'w' sslmode='require' "
            "options='-csearch_path=s'");
  EXPECT_EQ(sw::pg_conninfo("postgres://127.0.0.1/postgres"), "host='127.0.0.1' dbname='postgres'");
}

// A PostgreSQL URL whose server accepts TCP connections (the kernel completes the handshake) and never
// answers libpq's startup packet. Closing it (at destruction) resets the connections waiting in its backlog.
struct silent_server {
  int fd = -1;
  std::string url;
  silent_server() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 16) != 0)
      throw std::runtime_error("silent_server: cannot listen");
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    url = "postgresql://u@127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/db";
  }
  ~silent_server() { close(); }
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

TEST(PgUrl, ASilentServerFailsTheConnectionWithinTheConnectTimeout) {
  silent_server db;
  auto started = std::chrono::steady_clock::now();
  EXPECT_THROW(sw::repository::open(db.url, ""), sw::storage_error);
  auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_GE(waited, std::chrono::seconds(4));  // it did wait for the server...
  EXPECT_LE(waited, std::chrono::seconds(8));  // ...but not for TCP's own minutes-long timeouts
}

TEST(Journal, AnAppendThatFailsHalfwayLeavesNoPartOfItsLine) {
  auto dir = (fs::temp_directory_path() / ("sw-journal-full-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  {
    sw::journal j(dir);
    j.append(final_of("room", "u1", "one"));
    const auto line = journal_size(dir);
    rlimit old{};
    ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
    auto previous = ::signal(SIGXFSZ, SIG_IGN);  // past the limit a write fails (EFBIG) instead of killing
    rlimit full = old;
    full.rlim_cur = line + line / 2;  // the next line fits only in part, as on a disk that fills up
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &full), 0);
    EXPECT_THROW(j.append(final_of("room", "u2", "two")), std::runtime_error);
    ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &old), 0);
    ::signal(SIGXFSZ, previous);
    EXPECT_EQ(journal_size(dir), line);
    j.append(final_of("room", "u3", "three"));  // the disk has room again
  }
  sw::journal j(dir);
  ASSERT_EQ(j.recovered().size(), 2u);
  EXPECT_EQ(j.recovered()[0].final.transcript.utterance_id, "u1");
  EXPECT_EQ(j.recovered()[1].final.transcript.utterance_id, "u3");
  fs::remove_all(dir);
}

TEST(Journal, RetiredEntriesAreNotRecoveredAndATornLineIsIgnored) {
  auto dir = (fs::temp_directory_path() / ("sw-journal-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  std::uint64_t keep;
  {
    sw::journal j(dir);
    auto a = j.append(final_of("room", "u1", "one"));
    keep = j.append(final_of("room", "u2", "two \"quoted\"\nline"));
    j.append(sw::usage_record{"room", "", "alice", 1, 2, 3, 4, 5, 6, 7});
    j.retire({a});
    EXPECT_EQ(j.live(), 2u);
  }
  { std::ofstream(journal_segments(dir).back(), std::ios::app) << "F 99 {\"slug\":\"ro"; }  // crash mid-write
  sw::journal j(dir);
  ASSERT_EQ(j.recovered().size(), 2u);
  EXPECT_EQ(j.recovered()[0].seq, keep);
  EXPECT_EQ(j.recovered()[0].final.transcript.text, "two \"quoted\"\nline");
  EXPECT_FALSE(j.recovered()[1].is_final);
  EXPECT_EQ(j.recovered()[1].usage.audio_chunks, 3u);
  EXPECT_GT(j.append(final_of("room", "u3", "three")), 99u);
  fs::remove_all(dir);
}

// Batches retired while new finals keep coming, and one final that is never retired (parked for a room the web app
// never creates): the journal stays within a few segments, and a restart recovers exactly what is live.
TEST(Journal, ALongRunWithOneParkedRowStaysWithinABound) {
  auto dir = (fs::temp_directory_path() / ("sw-journal-long-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  const std::size_t segment = 64 * 1024;
  std::uint64_t parked = 0;
  std::vector<std::uint64_t> live, previous;
  std::uint64_t largest = 0;
  {
    sw::journal j(dir, segment);
    parked = j.append(final_of("ghost-room", "never", "waits for its room"));
    for (int batch = 0; batch < 400; ++batch) {
      for (int i = 0; i < 50; ++i)
        live.push_back(j.append(final_of("room", "b" + std::to_string(batch) + "-" + std::to_string(i),
                                         "a final of a long meeting, about this long, with some words")));
      j.retire(previous);  // the batch before this one is committed while this one is accepted
      previous.swap(live);
      live.clear();
      j.sync();
      largest = std::max(largest, j.bytes());
      ASSERT_EQ(j.bytes(), journal_size(dir));
    }
    EXPECT_EQ(j.live(), previous.size() + 1);
    EXPECT_LE(largest, 4 * segment) << "20 000 finals written; the journal must not keep them";
    EXPECT_LE(j.segments(), 4u);
    auto again = j.read_live(0, 1000);
    ASSERT_EQ(again.size(), previous.size() + 1);
    EXPECT_EQ(again.front().seq, parked);
  }
  sw::journal j(dir, segment);
  ASSERT_EQ(j.recovered().size(), previous.size() + 1);
  EXPECT_EQ(j.recovered().front().seq, parked);
  EXPECT_EQ(j.recovered().front().final.transcript.utterance_id, "never");
  EXPECT_EQ(j.recovered().back().seq, previous.back());
  j.retire({parked});
  j.retire(previous);
  EXPECT_EQ(journal_size(dir), 0u) << "nothing live: nothing kept";
  fs::remove_all(dir);
}

// The journal of a version before segments (one file, finals.journal) is replayed, then goes the usual way.
TEST(Journal, TheSingleFileOfEarlierVersionsIsReplayed) {
  auto dir = (fs::temp_directory_path() / ("sw-journal-legacy-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream out(dir + "/finals.journal");
    out << "F 1 " << sw::encode_journal_record(final_of("room", "u1", "one")) << "\n";
    out << "F 2 " << sw::encode_journal_record(final_of("room", "u2", "two")) << "\nR 1\n";
  }
  sw::journal j(dir);
  ASSERT_EQ(j.recovered().size(), 1u);
  EXPECT_EQ(j.recovered()[0].final.transcript.utterance_id, "u2");
  EXPECT_FALSE(fs::exists(dir + "/finals.journal"));
  EXPECT_GT(j.append(final_of("room", "u3", "three")), 2u);
  fs::remove_all(dir);
}

// Segments of the versions that named them for finals only (finals.<n>.journal) are replayed under today's name
// (rows.<n>.journal: they hold usage rows too), with their order and sequence numbers.
TEST(Journal, SegmentsNamedForFinalsAreReplayedAsRows) {
  auto dir = (fs::temp_directory_path() / ("sw-journal-finals-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream a(dir + "/finals.0000000003.journal");
    a << "F 7 " << sw::encode_journal_record(final_of("room", "u7", "seven")) << "\n";
    std::ofstream b(dir + "/finals.0000000004.journal");
    b << "F 8 " << sw::encode_journal_record(final_of("room", "u8", "eight")) << "\nR 7\n";
  }
  sw::journal j(dir);
  ASSERT_EQ(j.recovered().size(), 1u);
  EXPECT_EQ(j.recovered()[0].final.transcript.utterance_id, "u8");
  EXPECT_FALSE(fs::exists(dir + "/finals.0000000004.journal"));
  EXPECT_FALSE(journal_segments(dir).empty());
  EXPECT_GT(j.append(final_of("room", "u9", "nine")), 8u);
  fs::remove_all(dir);
}

// --- the persistence actor, through the running service ---------------------------------------------

class Persist : public Storage {};

void configure(sw::config& c, const fresh_db& db) {
  if (db.url.rfind("sqlite3://db=", 0) == 0) {
    c.sqlite_path = db.url.substr(13);
  } else {
    c.database_url = db.url;
  }
  c.persist_journal_dir = db.dir + "/journal";
}

// alice streams five chunks of 640 bytes to "room" and stops: five finals ("chunk <n> 640B"), one usage row.
void stream_five_chunks(const sw::test::harness& h) {
  auto c = h.connect("room", "alice");
  sw::test::expect_message(*c, "ready");
  std::vector<std::uint8_t> f(640, 0);
  for (int i = 0; i < 5; ++i) c->send_binary(f.data(), f.size());
  c->send_text(R"({"type":"stop"})");
  EXPECT_EQ(sw::test::expect_close(*c, 5000), 1000);
}

TEST_P(Persist, AStreamLeavesItsFinalsAndOneUsageRow) {
  {
    sw::test::harness h([&](sw::config& c) { configure(c, *db); });
    stream_five_chunks(h);
    for (int i = 0; i < 200 && db->count_or_none(R"(SELECT count(*) FROM "TranscriptionUsage")") < 1; ++i)
      std::this_thread::sleep_for(10ms);
    auto t = sw::net::http_fetch(h.http("/api/sessions/room/transcript"), "GET", "",
                                 {{"Authorization", "Bearer " + sw::test::harness::token("room", "bob")}});
    EXPECT_EQ(t.status, 200u) << t.body;
    EXPECT_NE(t.body.find("\"text\":\"chunk 5 640B\""), std::string::npos) << t.body;
    auto other = sw::net::http_fetch(h.http("/api/sessions/room/transcript"), "GET", "",
                                     {{"Authorization", "Bearer " + sw::test::harness::token("elsewhere", "bob")}});
    EXPECT_EQ(other.status, 403u);
    EXPECT_EQ(sw::net::http_fetch(h.http("/api/sessions/room/transcript")).status, 401u);
    auto missing = sw::net::http_fetch(h.http("/api/sessions/nope/transcript"), "GET", "",
                                       {{"Authorization", "Bearer service-secret"}});
    EXPECT_EQ(missing.status, 404u);
    auto health = sw::net::http_fetch(h.http("/health"));
    EXPECT_EQ(field(health.body, "queueLength"), "0");
    auto m = sw::net::http_fetch(h.http("/metrics"));
    EXPECT_EQ(field(field(m.body, "queue"), "totalFlushed"), "5") << m.body;
  }
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "TranscriptSegment")"), 5);
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "TranscriptionUsage")"), 1);
  EXPECT_EQ(db->count(R"(SELECT "finalTranscripts" FROM "TranscriptionUsage")"), 5);
}

// GET /api/sessions/{slug}/transcript in pages (?offset, ?limit): "nextOffset" while more follow; a query that is no
// page is refused with 400 and says why.
TEST_P(Persist, TheStoredTranscriptComesInPages) {
  sw::test::harness h([&](sw::config& c) { configure(c, *db); });
  stream_five_chunks(h);
  auto get = [&](const std::string& query) {
    return sw::net::http_fetch(h.http("/api/sessions/room/transcript" + query), "GET", "",
                               {{"Authorization", "Bearer service-secret"}});
  };
  ASSERT_TRUE(sw::test::eventually([&] { return get("").body.find("chunk 5 640B") != std::string::npos; }));
  auto whole = get("");
  EXPECT_EQ(whole.body.find("nextOffset"), std::string::npos) << "one page holds it all: " << whole.body;
  auto first = get("?limit=2");
  EXPECT_EQ(first.status, 200u);
  EXPECT_NE(first.body.find(R"("text":"chunk 1 640B")"), std::string::npos) << first.body;
  EXPECT_NE(first.body.find(R"("text":"chunk 2 640B")"), std::string::npos) << first.body;
  EXPECT_EQ(first.body.find("chunk 3"), std::string::npos) << first.body;
  EXPECT_EQ(field(first.body, "nextOffset"), "2");
  auto second = get("?offset=2&limit=2");
  EXPECT_NE(second.body.find("chunk 3 640B"), std::string::npos) << second.body;
  EXPECT_NE(second.body.find("chunk 4 640B"), std::string::npos) << second.body;
  EXPECT_EQ(field(second.body, "nextOffset"), "4");
  auto last = get("?offset=4&limit=2");
  EXPECT_NE(last.body.find("chunk 5 640B"), std::string::npos) << last.body;
  EXPECT_EQ(last.body.find("nextOffset"), std::string::npos) << last.body;
  auto past = get("?offset=9");
  EXPECT_EQ(past.status, 200u);
  EXPECT_EQ(past.body, R"({"sessionSlug":"room","segments":[]})");
  for (const char* q : {"?limit=0", "?limit=20001", "?limit=abc", "?limit=", "?limit=2x", "?offset=-1", "?offset=1e3",
                        "?offset=99999999999999999999", "?offset=1000000000001"}) {
    auto bad = get(q);
    EXPECT_EQ(bad.status, 400u) << q << ": " << bad.body;
    EXPECT_EQ(field(bad.body, "error"), "invalid_query") << q;
    EXPECT_NE(field(bad.body, "message").find(std::string(q).substr(1, 5)), std::string::npos) << bad.body;
  }
  EXPECT_EQ(get("?limit=20000").status, 200u);
  auto unknown = sw::net::http_fetch(h.http("/api/sessions/nope/transcript?limit=abc"), "GET", "",
                                     {{"Authorization", "Bearer " + sw::test::harness::token("room", "bob")}});
  EXPECT_EQ(unknown.status, 403u) << "who asks is checked first";
}

TEST_P(Persist, JournaledFinalsAreReplayedAtStartExactlyOnce) {
  {  // a crash left three accepted finals (one already committed) in the journal
    sw::journal j(db->dir + "/journal");
    j.append(final_of("room", "k-u1", "one"));
    j.append(final_of("room", "k-u2", "two"));
    j.append(final_of("room", "k-u1", "one"));
  }
  {
    sw::test::harness h([&](sw::config& c) { configure(c, *db); }, std::nullopt);
    for (int i = 0; i < 300 && db->count_or_none(R"(SELECT count(*) FROM "TranscriptSegment")") < 2; ++i)
      std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "TranscriptSegment")"), 2);
  sw::journal j(db->dir + "/journal");
  EXPECT_TRUE(j.recovered().empty());
}

INSTANTIATE_TEST_SUITE_P(Backends, Persist, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

// The web app owns the schema: a room it does not know (yet), or a row its database refuses on its own, is set aside
// and retried; every other final and usage row is written at once, and nothing counts as a database error.
class PersistWebApp : public Storage {
protected:
  void stream_and_stop(const sw::test::harness& h, const std::string& room, const std::string& who, int frames) {
    auto c = h.connect(room, who);
    sw::test::expect_message(*c, "ready");
    std::vector<std::uint8_t> f(640, 0);
    for (int i = 0; i < frames; ++i) c->send_binary(f.data(), f.size());
    c->send_text(R"({"type":"stop"})");
    EXPECT_EQ(sw::test::expect_close(*c, 5000), 1000);
  }
  std::string queue_field(const sw::test::harness& h, const std::string& name) {
    return field(field(sw::net::http_fetch(h.http("/metrics")).body, "queue"), name);
  }
};

TEST_P(PersistWebApp, UnknownRoomsAndRefusedRowsAreParkedAndNeverBlockTheOthers) {
  const bool pg = GetParam() == "postgresql";
  create_web_app_schema(*db, pg);
  // A value this database refuses on its own (a constraint of the web app's): the third final of every stream.
  if (pg) {
    db->exec(R"(ALTER TABLE "TranscriptSegment" ADD CONSTRAINT "no_three" CHECK ("text" <> 'chunk 3 640B'))");
  } else {
    db->exec(R"(CREATE TRIGGER "no_three" BEFORE INSERT ON "TranscriptSegment" WHEN NEW."text" = 'chunk 3 640B'
                BEGIN SELECT RAISE(ABORT, 'refused by the web app'); END)");
  }
  sw::test::harness h([&](sw::config& c) { configure(c, *db); });
  stream_and_stop(h, "ghost-room", "dave", 5);  // a room the web app has not created (yet)
  for (auto who : {"alice", "bob", "carol"}) stream_and_stop(h, "known-room", who, 5);
  ASSERT_TRUE(
      sw::test::eventually([&] { return db->count(R"(SELECT count(*) FROM "TranscriptionUsage")") == 3; }, 10s));
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "TranscriptSegment")"), 3 * 4);
  // 5 finals and the usage row of the unknown room, and the 3 refused finals, wait aside
  ASSERT_TRUE(sw::test::eventually([&] { return queue_field(h, "parked") == "9"; })) << queue_field(h, "parked");
  EXPECT_EQ(queue_field(h, "totalErrors"), "0");
  EXPECT_EQ(sw::test::metric(h, "persist.refused_rows") % 3, 0);
  EXPECT_GE(sw::test::metric(h, "persist.unknown_session_rows"), 6);
  auto ready = sw::net::http_fetch(h.http("/ready"));
  EXPECT_EQ(ready.status, 200u) << ready.body;
  EXPECT_EQ(field(field(field(ready.body, "checks"), "persistence"), "parked"), "9") << ready.body;
  // The web app creates the room and lifts its constraint: the parked rows go in at the next retry.
  db->exec(
      R"(INSERT INTO "VideoSession" ("id", "slug", "spaceId", "status") VALUES ('vs-ghost', 'ghost-room', 'space-1', 'LIVE'))");
  db->exec(pg ? R"(ALTER TABLE "TranscriptSegment" DROP CONSTRAINT "no_three")" : R"(DROP TRIGGER "no_three")");
  ASSERT_TRUE(
      sw::test::eventually([&] { return db->count(R"(SELECT count(*) FROM "TranscriptionUsage")") == 4; }, 15s));
  ASSERT_TRUE(sw::test::eventually([&] { return queue_field(h, "parked") == "0"; }, 15s));
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "TranscriptSegment")"), 4 * 5);
  EXPECT_EQ(queue_field(h, "totalErrors"), "0");
}

TEST_P(PersistWebApp, ParkedRowsAreBoundedAndTheOldestIsGivenUpVisibly) {
  create_web_app_schema(*db, GetParam() == "postgresql");
  sw::test::harness h([&](sw::config& c) {
    configure(c, *db);
    c.persist_max_parked = 4;
  });
  stream_and_stop(h, "ghost-room", "dave", 6);  // 6 finals + 1 usage row for a room nobody created
  ASSERT_TRUE(sw::test::eventually([&] { return sw::test::metric(h, "persist.abandoned_rows") == 3; }))
      << sw::test::metric(h, "persist.abandoned_rows");
  EXPECT_EQ(queue_field(h, "parked"), "4");
  auto ready = sw::net::http_fetch(h.http("/ready"));
  EXPECT_EQ(ready.status, 503u) << ready.body;
  EXPECT_EQ(field(field(field(ready.body, "checks"), "persistence"), "ok"), "false") << ready.body;
}

INSTANTIATE_TEST_SUITE_P(Backends, PersistWebApp, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });

}  // namespace

namespace {

// A private PostgreSQL cluster this test may stop and start (script/test exports SESSIONS_WS_TEST_PGBIN).
struct private_pg {
  std::string base, bin, url, opts;
  int port = 0;
  bool ok = false;
  private_pg() {
    const char* b = std::getenv("SESSIONS_WS_TEST_PGBIN");
    if (!b) return;
    bin = b;
    base = (fs::temp_directory_path() / ("sw-pg-outage-" + std::to_string(::getpid()))).string();
    fs::remove_all(base);
    fs::create_directories(base);
    port = sw::test::harness({}, std::nullopt).port;  // a free port
    opts = "-p " + std::to_string(port) + " -k " + base + " -c listen_addresses=127.0.0.1 -c fsync=off";
    ok = sh("chown postgres:postgres " + base + " && runuser -u postgres -- " + bin + "/initdb -D " + base +
            "/data -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null") &&
         start();
    url = "postgresql://postgres@127.0.0.1:" + std::to_string(port) + "/postgres";
  }
  ~private_pg() {
    if (!bin.empty()) stop();
    std::error_code ec;
    fs::remove_all(base, ec);
  }
  static bool sh(const std::string& cmd) { return std::system(cmd.c_str()) == 0; }
  bool start() {
    return sh("runuser -u postgres -- " + bin + "/pg_ctl -D " + base + "/data -l " + base + "/log -w -t 30 -o '" +
              opts + "' start >/dev/null");
  }
  bool stop() {
    return sh("runuser -u postgres -- " + bin + "/pg_ctl -D " + base + "/data -m immediate -w stop >/dev/null");
  }
};

TEST(PersistOutage, DatabaseDownForThirtySecondsLosesNothing) {
  private_pg pg;
  if (!pg.ok) {
    if (std::getenv("CI")) FAIL() << "SESSIONS_WS_TEST_PGBIN is not set: run through script/test";
    GTEST_SKIP() << "no PostgreSQL binaries (run through script/test)";
  }
  auto journal_dir = pg.base + "/journal";
  long long expected = 0;
  {
    sw::test::harness h([&](sw::config& c) {
      c.database_url = pg.url;
      c.persist_journal_dir = journal_dir;
    });
    auto c = h.connect("outage-room", "alice");
    sw::test::expect_message(*c, "ready");
    std::vector<std::uint8_t> f(640, 0);
    auto send = [&](int n) {
      for (int i = 0; i < n; ++i) {
        c->send_binary(f.data(), f.size());
        sw::test::expect_message(*c, "transcript_final");
        ++expected;
      }
    };
    send(10);
    ASSERT_TRUE(pg.stop());
    bool queued = false, errors = false;
    for (int s = 0; s < 30; ++s) {  // 30 s without a database, finals keep coming
      send(2);
      std::this_thread::sleep_for(1s);
      auto health = sw::net::http_fetch(h.http("/health"));
      queued = queued || field(health.body, "queueLength") != "0";
    }
    auto m = sw::net::http_fetch(h.http("/metrics"));
    errors = field(field(m.body, "queue"), "totalErrors") != "0";
    EXPECT_TRUE(queued) << "queueLength must show the finals waiting for the database";
    EXPECT_TRUE(errors) << m.body;
    EXPECT_EQ(sw::net::http_fetch(h.http("/ready")).status, 503u);
    ASSERT_TRUE(pg.start());
    for (int i = 0; i < 200; ++i) {
      auto health = sw::net::http_fetch(h.http("/health"));
      if (field(health.body, "queueLength") == "0") break;
      std::this_thread::sleep_for(50ms);
    }
    c->close();
  }
  soci::session s(soci::postgresql, sw::pg_conninfo(pg.url));
  long long rows = 0, distinct = 0;
  s << R"(SELECT count(*), count(DISTINCT "utteranceId") FROM "TranscriptSegment")", soci::into(rows),
      soci::into(distinct);
  EXPECT_EQ(rows, expected);
  EXPECT_EQ(distinct, expected);
}

}  // namespace

namespace {

// The live finals of a journal file (what had been accepted), by utterance id.
std::set<std::string> accepted_in_journal(const std::string& dir) {
  std::map<std::uint64_t, std::string> live;
  std::string line;
  for (auto& segment : journal_segments(dir)) {
    std::ifstream in(segment);
    while (std::getline(in, line)) {
      if (line.size() < 3) continue;
      auto seq = std::strtoull(line.c_str() + 2, nullptr, 10);
      if (line[0] == 'R') live.erase(seq);
      if (line[0] == 'F') {
        sw::final_record f;
        auto sp = line.find(' ', 2);
        if (sp != std::string::npos && sw::decode_journal_record(line.substr(sp + 1), f))
          live[seq] = f.transcript.utterance_id;
      }
    }
  }
  std::set<std::string> out;
  for (auto& [seq, id] : live) out.insert(id);
  return out;
}

std::size_t journal_final_lines(const std::string& dir) {
  std::string line;
  std::size_t n = 0;
  for (auto& segment : journal_segments(dir)) {
    std::ifstream in(segment);
    while (std::getline(in, line)) n += line.rfind("F ", 0) == 0;
  }
  return n;
}

// Starts the service on the same database and journal, and waits until it has written what the journal held.
void replay_journal(const std::function<void(sw::config&)>& tweak) {
  sw::test::harness h(tweak);
  for (int i = 0; i < 400; ++i) {
    if (field(sw::net::http_fetch(h.http("/health")).body, "queueLength") == "0") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
}

// How many rows each utterance id has in the database.
std::map<std::string, int> stored_utterances(const fresh_db& db) {
  auto sp = db.connect();
  soci::rowset<std::string> ids = (sp->prepare << R"(SELECT "utteranceId" FROM "TranscriptSegment")");
  std::map<std::string, int> stored;
  for (auto& id : ids) ++stored[id];
  return stored;
}

class PersistCrash : public Storage {};

TEST_P(PersistCrash, SigkillWhileWritingThenReplayLeavesEveryAcceptedFinalOnce) {
  auto dir = (fs::temp_directory_path() / ("sw-crash-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  auto tweak = [&](sw::config& c) {
    configure(c, *db);
    c.persist_journal_dir = dir + "/journal";
    c.persist_flush = std::chrono::milliseconds(50);
  };
  // The process that gets killed writes to the database slowly (big batches, rare flushes), so that at the
  // kill most accepted finals exist only in its journal.
  auto slow = [&](sw::config& c) {
    tweak(c);
    c.persist_flush = std::chrono::milliseconds(60'000);
    c.persist_batch = 250;
    c.audio_max_frames_per_second = 100'000;  // its 2 900 frames go as fast as the finals are read
  };
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  pid_t pid = ::fork();  // before this process starts any thread
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    sw::test::harness h(slow);
    std::uint16_t port = h.port;
    if (::write(fds[1], &port, sizeof port) != sizeof port) _exit(3);
    for (;;) ::pause();
  }
  std::uint16_t port = 0;
  ASSERT_EQ(::read(fds[0], &port, sizeof port), static_cast<ssize_t>(sizeof port));
  // Stream only once the child has migrated its database: on a loaded machine SQLite's first fsyncs can take
  // longer than the whole stream, and a kill before the first write would find nothing to replay.
  for (int i = 0; i < 400; ++i) {
    if (sw::net::http_fetch("http://127.0.0.1:" + std::to_string(port) + "/ready").status == 200) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::set<std::string> seen;
  {
    auto c = sw::net::ws_client::connect("ws://127.0.0.1:" + std::to_string(port) + "/api/realtime/transcribe?token=" +
                                         sw::test::harness::token("crash-room", "alice"));
    sw::test::expect_message(*c, "ready");
    std::vector<std::uint8_t> f(64, 0);
    // Every frame yields one final. The client keeps at most 100 finals outstanding, so that on a loaded
    // machine it reads fast enough not to be closed as a slow consumer (4409); at the end it waits for all.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    auto read_finals = [&](std::size_t want, std::chrono::milliseconds wait) {
      while (seen.size() < want && std::chrono::steady_clock::now() < deadline) {
        auto m = c->read(wait);
        if (m.kind == sw::net::ws_client::message::closed) {
          ADD_FAILURE() << "closed " << m.close_code << " " << m.close_reason;
          return;
        }
        if (m.kind == sw::net::ws_client::message::timeout && wait.count() == 0) return;
        if (m.kind == sw::net::ws_client::message::text && field(m.data, "type") == "transcript_final")
          seen.insert(field(m.data, "utteranceId"));
      }
    };
    for (std::size_t i = 0; i < 2900; ++i) {  // not a multiple of the batch: the tail stays in the journal
      c->send_binary(f.data(), f.size());
      read_finals(i + 1, std::chrono::milliseconds(0));
      if (i + 1 > seen.size() + 100) read_finals(i + 1 - 100, std::chrono::milliseconds(500));
    }
    read_finals(2900, std::chrono::milliseconds(500));
    // The journal takes each final as the clients get it (it never waits for the database): kill as soon as it
    // holds all of them. Every final a client saw must then be stored exactly once after the restart.
    for (int i = 0; i < 400 && journal_final_lines(dir + "/journal") < 2900; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
  }
  auto accepted = accepted_in_journal(dir + "/journal");
  long long before = -1;
  try {
    before = db->count(R"(SELECT count(*) FROM "TranscriptSegment")");
  } catch (const std::exception&) {
  }
  ASSERT_EQ(seen.size(), 2900u);
  ASSERT_GT(accepted.size(), 0u) << "the kill should find finals that exist only in the journal; seen " << seen.size()
                                 << ", committed " << before << ", journal bytes " << journal_size(dir + "/journal");
  replay_journal(tweak);  // restart on the same database and journal
  auto stored = stored_utterances(*db);
  for (auto& id : accepted) EXPECT_EQ(stored[id], 1) << id << " was accepted (journaled) but is not stored once";
  for (auto& id : seen) EXPECT_EQ(stored[id], 1) << id << " reached the client but is not stored once";
  for (auto& [id, n] : stored) EXPECT_EQ(n, 1) << id;
  EXPECT_GT(stored.size(), static_cast<std::size_t>(std::max<long long>(before, 0)) - 1);
  std::cout << "seen " << seen.size() << " finals, " << before << " committed before the kill, " << accepted.size()
            << " only in the journal, " << stored.size() << " stored after replay\n";
  fs::remove_all(dir);
}

}  // namespace

namespace {

// The scheduling policy of every thread of this process (field 41 of /proc/self/task/<tid>/stat).
std::vector<int> thread_policies() {
  std::vector<int> out;
  for (const auto& t : fs::directory_iterator("/proc/self/task")) {
    std::ifstream in(t.path() / "stat");
    std::string line;
    if (!std::getline(in, line) || line.rfind(')') == std::string::npos) continue;  // the thread ended meanwhile
    std::istringstream rest(line.substr(line.rfind(')') + 1));  // the name may hold spaces and parentheses
    std::string v;
    for (int field = 3; field <= 41 && rest >> v; ++field)
      if (field == 41) out.push_back(std::stoi(v));
  }
  return out;
}

TEST(PersistThreads, TheJournalTheDatabaseAndTheMemoryTrimRunAsBatchThreadsAndNothingElseDoes) {
  auto batch = [] {
    auto p = thread_policies();
    return std::count(p.begin(), p.end(), SCHED_BATCH);
  };
  ASSERT_EQ(batch(), 0);
  sw::test::harness h;  // SQLite persistence and the memory trim, as by default
  // A final to journal must not preempt the I/O thread that sends it (actors/background_thread.hpp).
  EXPECT_TRUE(sw::test::eventually([&] { return batch() == 3; })) << batch() << " SCHED_BATCH threads";
  auto p = thread_policies();
  EXPECT_EQ(std::count(p.begin(), p.end(), SCHED_OTHER), static_cast<long>(p.size()) - 3)
      << "the I/O threads and CAF's clock keep the default policy";
  EXPECT_EQ(sw::net::http_fetch(h.http("/health")).status, 200u);
}

TEST(PersistMemory, BeyondMaxPendingFinalsWaitInTheJournalAndAreAllWritten) {
  auto dir = (fs::temp_directory_path() / ("sw-spill-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  { std::ofstream(dir + "/blocker") << "not a directory"; }  // the database cannot be opened yet
  long long expected = 0;
  {
    sw::test::harness h([&](sw::config& c) {
      c.sqlite_path = dir + "/blocker/sessions.db";
      c.persist_journal_dir = dir + "/journal";
      c.persist_max_pending = 10;
      c.persist_batch = 5;
      c.persist_flush = std::chrono::milliseconds(50);
    });
    auto c = h.connect("spill-room", "alice");
    sw::test::expect_message(*c, "ready");
    std::vector<std::uint8_t> f(640, 0);
    for (int i = 0; i < 60; ++i) {
      c->send_binary(f.data(), f.size());
      sw::test::expect_message(*c, "transcript_final");
      ++expected;
    }
    sw::net::http_result m;
    // The finals reach the persistence actor in parallel with the client, and the failed write that proves the
    // database was tried may come back after the last of them.
    for (int i = 0; i < 200; ++i) {
      m = sw::net::http_fetch(h.http("/metrics"));
      auto queue = field(m.body, "queue");
      if (field(queue, "queueLength") == "60" && field(queue, "totalErrors") != "0") break;
      std::this_thread::sleep_for(25ms);
    }
    EXPECT_EQ(field(field(m.body, "queue"), "queueLength"), "60") << m.body;
    EXPECT_NE(field(field(m.body, "queue"), "totalErrors"), "0");
    fs::remove(dir + "/blocker");  // the database becomes available
    for (int i = 0; i < 400; ++i) {
      if (field(sw::net::http_fetch(h.http("/health")).body, "queueLength") == "0") break;
      std::this_thread::sleep_for(25ms);
    }
    EXPECT_EQ(field(sw::net::http_fetch(h.http("/health")).body, "queueLength"), "0");
    c->close();
  }
  fresh_db db("sqlite");
  db.url = "sqlite3://db=" + dir + "/blocker/sessions.db";
  EXPECT_EQ(db.count(R"(SELECT count(DISTINCT "utteranceId") FROM "TranscriptSegment")"), expected);
  fs::remove_all(dir);
}

TEST(PersistStuckDatabase, FinalsAreJournaledAndHealthAnswersWhileTheDatabaseHangs) {
  auto dir = (fs::temp_directory_path() / ("sw-stuck-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  silent_server db;
  {
    sw::test::harness h([&](sw::config& c) {
      c.database_url = db.url;
      c.persist_journal_dir = dir + "/journal";
      c.persist_flush = 50ms;
      c.shutdown_timeout = 1s;
    });
    auto c = h.connect("stuck-room", "alice");
    sw::test::expect_message(*c, "ready");
    std::vector<std::uint8_t> f(640, 0);
    for (int i = 0; i < 20; ++i) {
      c->send_binary(f.data(), f.size());
      sw::test::expect_message(*c, "transcript_final");
    }
    // The database actor sits in libpq's connect (5 s a try); the journal must not wait for it.
    std::size_t journaled = 0;
    for (int i = 0; i < 40 && journaled < 20; ++i) {
      std::this_thread::sleep_for(25ms);
      journaled = accepted_in_journal(dir + "/journal").size();
    }
    EXPECT_EQ(journaled, 20u) << "finals were held up behind the database";
    auto started = std::chrono::steady_clock::now();
    auto health = sw::net::http_fetch(h.http("/health"));
    auto ready = sw::net::http_fetch(h.http("/ready"));
    EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
    EXPECT_EQ(field(health.body, "queueLength"), "20") << health.body;
    EXPECT_EQ(ready.status, 503u) << ready.body;
    // Transcript reads wait for the database, but at most 16 of them: the rest are refused at once, not queued.
    std::atomic<int> refused{0}, refused_fast{0};
    std::vector<std::thread> readers;
    auto asked = std::chrono::steady_clock::now();
    for (int i = 0; i < 24; ++i)
      readers.emplace_back([&] {
        try {
          auto r =
              sw::net::http_fetch(h.http("/api/sessions/stuck-room/transcript"), "GET", "",
                                  {{"Authorization", "Bearer " + sw::test::harness::token("stuck-room", "alice")}});
          if (r.status == 503 && r.body.find("too many transcript reads") != std::string::npos) {
            ++refused;
            if (std::chrono::steady_clock::now() - asked < 3s) ++refused_fast;
          }
        } catch (const std::exception&) {  // the waiting ones time out on the client side
        }
      });
    for (auto& t : readers) t.join();
    EXPECT_EQ(refused.load(), 8);
    EXPECT_EQ(refused_fast.load(), 8);
    c->close();
    db.close();  // libpq's pending connect fails now: shutdown need not wait for its timeout
  }
  fs::remove_all(dir);
}

class PersistShutdown : public Storage {};

TEST_P(PersistShutdown, SigtermFlushesPendingFinalsAndExitsZero) {
  auto dir = (fs::temp_directory_path() / ("sw-sigterm-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  fs::create_directories(dir);
  sw::test::fake_gladia fake;
  int port = sw::test::harness({}, std::nullopt).port;
  // Everything the child needs is prepared before fork: it only calls execve.
  std::vector<std::string> env = {"PORT=" + std::to_string(port),
                                  "HOST=127.0.0.1",
                                  "TRANSCRIPTION_JWT_SECRET=" + sw::test::secret,
                                  "GLADIA_API_URL=" + fake.url(),
                                  "GLADIA_API_KEY=fake-gladia-key",
                                  "DATABASE_URL=" + db->url,
                                  "PERSIST_JOURNAL_DIR=" + dir + "/journal",
                                  "PERSIST_FLUSH_MS=600000",  // nothing is written before the shutdown
                                  "PERSIST_BATCH=10000",
                                  "SHUTDOWN_TIMEOUT_MS=10000",
                                  "LOG_LEVEL=error"};
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  char* argv[] = {const_cast<char*>(SESSIONS_WS_BIN), nullptr};
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execve(SESSIONS_WS_BIN, argv, envp.data());
    _exit(127);
  }
  std::set<std::string> seen;
  for (int i = 0; i < 200; ++i) {
    try {
      if (sw::net::http_fetch("http://127.0.0.1:" + std::to_string(port) + "/health").status == 200) break;
    } catch (const std::exception&) {
      std::this_thread::sleep_for(25ms);
    }
  }
  auto c = sw::net::ws_client::connect("ws://127.0.0.1:" + std::to_string(port) + "/api/realtime/transcribe?token=" +
                                       sw::test::harness::token("term-room", "alice"));
  sw::test::expect_message(*c, "ready", 5000);
  std::string pcm(96'000, '\1');  // 3 s: three finals while streaming
  for (std::size_t off = 0; off < pcm.size(); off += 640) c->send_binary(pcm.data() + off, 640);
  for (int i = 0; i < 3; ++i) seen.insert(field(sw::test::expect_message(*c, "transcript_final", 5000), "utteranceId"));
  auto t0 = std::chrono::steady_clock::now();
  ::kill(pid, SIGTERM);
  // the stream is drained first: Gladia's last final arrives, then stt_status stopped, then close 1001
  for (;;) {
    auto m = c->read(10s);
    if (m.kind == sw::net::ws_client::message::text && field(m.data, "type") == "transcript_final")
      seen.insert(field(m.data, "utteranceId"));
    if (m.kind != sw::net::ws_client::message::text) {
      EXPECT_EQ(m.close_code, 1001);
      break;
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 12s);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  auto sp = db->connect();
  soci::rowset<std::string> ids = (sp->prepare << R"(SELECT "utteranceId" FROM "TranscriptSegment")");
  std::set<std::string> stored(ids.begin(), ids.end());
  EXPECT_EQ(stored, seen);
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "TranscriptionUsage")"), 1);
  EXPECT_EQ(journal_size(dir + "/journal"), 0u) << "everything reached the database";
  fs::remove_all(dir);
}

// A database that takes connections and answers pings but never finishes a write (here: a table lock that is
// never released). The actor system's destructor would join the database actor's thread forever; shutdown must
// still end at its bound, and the finals it could not write must be stored by the next start.
class PersistHungWrite : public Storage {};

TEST_P(PersistHungWrite, ShutdownEndsAtItsBoundAndTheNextStartStoresEveryFinal) {
  auto dir = (fs::temp_directory_path() / ("sw-hung-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  auto tweak = [&](sw::config& c) {
    configure(c, *db);
    c.persist_journal_dir = dir + "/journal";
    c.persist_flush = std::chrono::milliseconds(50);
    c.shutdown_timeout = std::chrono::seconds(1);
  };
  std::set<std::string> seen;
  {
    sw::test::harness h(tweak);
    for (int i = 0; i < 200 && sw::net::http_fetch(h.http("/ready")).status != 200; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    auto lock = db->connect();
    *lock << "BEGIN";
    *lock << R"(LOCK TABLE "TranscriptSegment" IN ACCESS EXCLUSIVE MODE)";
    auto c = h.connect("hung-room", "alice");
    sw::test::expect_message(*c, "ready");
    std::vector<std::uint8_t> f(640, 0);
    for (int i = 0; i < 5; ++i) {
      c->send_binary(f.data(), f.size());
      seen.insert(field(sw::test::expect_message(*c, "transcript_final"), "utteranceId"));
    }
    for (int i = 0; i < 200 && accepted_in_journal(dir + "/journal").size() < 5; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    // The database actor's write waits on the lock.
    ASSERT_TRUE(sw::test::eventually(
        [&] { return db->count(R"(SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock')") >= 1; },
        10s));
    // The lock goes after 8 s at the latest, so that a shutdown that waits for the write ends (and fails the
    // bound below) instead of hanging. The service is shut down on the thread that started it: CAF 0.17's actor
    // system waits for its logger, which that thread holds, in its destructor.
    std::atomic<bool> returned{false};
    std::thread release([&] {
      for (int i = 0; i < 800 && !returned; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      *lock << "ROLLBACK";
    });
    auto started = std::chrono::steady_clock::now();
    bool clean = h.svc->shutdown();
    auto took = std::chrono::steady_clock::now() - started;
    returned = true;
    release.join();
    EXPECT_FALSE(clean) << "shutdown reported a clean end";
    // Streams drain within the bound (1 s), the persistence actor answers within it (1 s), actors get 2 s.
    EXPECT_LT(took, std::chrono::seconds(5)) << "shutdown waited for a database write that does not return";
    EXPECT_EQ(accepted_in_journal(dir + "/journal"), seen);
  }
  replay_journal(tweak);
  auto stored = stored_utterances(*db);
  ASSERT_EQ(seen.size(), 5u);
  for (auto& id : seen) EXPECT_EQ(stored[id], 1) << id;
  EXPECT_EQ(stored.size(), seen.size());
  fs::remove_all(dir);
}

// A full disk under the journal: RLIMIT_FSIZE makes every write past 4 KiB fail (EFBIG), as ENOSPC would. The
// journal stops being a safety net, but every final and the usage row must still reach the database.
class PersistJournalFull : public Storage {};

TEST_P(PersistJournalFull, FinalsAndUsageStillReachTheDatabase) {
  auto dir = (fs::temp_directory_path() / ("sw-full-" + std::to_string(::getpid()))).string();
  fs::remove_all(dir);
  auto tweak = [&](sw::config& c) {
    configure(c, *db);
    c.persist_journal_dir = dir + "/journal";
    c.persist_flush = std::chrono::milliseconds(60'000);  // nothing is written (or retired) before the stop
    c.persist_batch = 10'000;
  };
  int up[2], down[2];
  ASSERT_EQ(::pipe(up), 0);
  ASSERT_EQ(::pipe(down), 0);
  pid_t pid = ::fork();  // before this process starts any thread
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::signal(SIGXFSZ, SIG_IGN);  // a write past the limit fails instead of killing the process
    {
      sw::test::harness h(tweak);
      rlimit limit{4096, 4096};
      if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) _exit(4);
      std::uint16_t port = h.port;
      if (::write(up[1], &port, sizeof port) != sizeof port) _exit(3);
      char go = 0;
      if (::read(down[0], &go, 1) != 1) _exit(3);
    }  // shuts down: what is pending goes to the database
    _exit(0);
  }
  std::uint16_t port = 0;
  ASSERT_EQ(::read(up[0], &port, sizeof port), static_cast<ssize_t>(sizeof port));
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  for (int i = 0; i < 400 && sw::net::http_fetch(base + "/ready").status != 200; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  std::set<std::string> seen;
  {
    auto c = sw::net::ws_client::connect("ws://127.0.0.1:" + std::to_string(port) + "/api/realtime/transcribe?token=" +
                                         sw::test::harness::token("full-room", "alice"));
    sw::test::expect_message(*c, "ready");
    std::vector<std::uint8_t> f(640, 0);
    for (int i = 0; i < 40; ++i) {  // ~250 bytes of journal each: the limit is passed after ~16
      c->send_binary(f.data(), f.size());
      seen.insert(field(sw::test::expect_message(*c, "transcript_final"), "utteranceId"));
    }
    c->close();
  }
  std::string queue;
  for (int i = 0; i < 200 && queue != "40"; ++i) {  // every final is accepted, journaled or not
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
    queue = field(sw::net::http_fetch(base + "/health").body, "queueLength");
  }
  EXPECT_EQ(queue, "40");
  auto metrics = sw::net::http_fetch(base + "/metrics").body;
  EXPECT_NE(metrics.find("persist.journal_failures"), std::string::npos) << metrics;
  EXPECT_EQ(metrics.find("persist.lost_finals"), std::string::npos) << metrics;
  EXPECT_LE(journal_size(dir + "/journal"), 4096u);
  ASSERT_EQ(::write(down[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  auto stored = stored_utterances(*db);
  ASSERT_EQ(seen.size(), 40u);
  for (auto& id : seen) EXPECT_EQ(stored[id], 1) << id;
  EXPECT_EQ(stored.size(), seen.size());
  EXPECT_EQ(db->count(R"(SELECT count(*) FROM "TranscriptionUsage")"), 1);
  for (int fd : {up[0], up[1], down[0], down[1]}) ::close(fd);
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Backends, PersistCrash, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });
INSTANTIATE_TEST_SUITE_P(Backends, PersistShutdown, ::testing::Values("sqlite", "postgresql"),
                         [](const auto& info) { return info.param; });
// PostgreSQL only: the file size limit would stop SQLite's own file too.
INSTANTIATE_TEST_SUITE_P(Backends, PersistJournalFull, ::testing::Values("postgresql"),
                         [](const auto& info) { return info.param; });
// PostgreSQL only: SQLite gives up on a locked database after its 5 s busy timeout, and the write is retried.
INSTANTIATE_TEST_SUITE_P(Backends, PersistHungWrite, ::testing::Values("postgresql"),
                         [](const auto& info) { return info.param; });

}  // namespace
