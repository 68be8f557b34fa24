// Two instances behind HAProxy (deploy/haproxy.cfg, Debian's haproxy 2.6) with TLS at the proxy, one PostgreSQL
// schema, the fake Gladia: rooms stay on one instance, a draining instance hands its streams over, and every final
// a client saw is stored once. Needs the throwaway PostgreSQL of script/test (SESSIONS_WS_TEST_PG).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <soci/postgresql/soci-postgresql.h>
#include <soci/soci.h>

#include "net/client.hpp"
#include "storage/repository.hpp"
#include "tests/fakes/fake_gladia.hpp"
#include "tests/support/harness.hpp"
#include "tests/support/pki.hpp"

namespace {

using namespace std::chrono_literals;
using sw::test::field;
using sw::test::harness;

const std::string service_secret = "proxy-test-service-secret";

int free_port() {
  harness probe({}, std::nullopt);
  return probe.port;
}

// A child process with its environment; SIGTERM (and a wait) on destruction if still running.
struct child {
  pid_t pid = -1;
  child(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env, const std::string& log) {
    pid = fork();
    if (pid == 0) {
      for (auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
      if (!freopen(log.c_str(), "w", stderr) || !freopen(log.c_str(), "a", stdout)) _exit(126);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execvp(args[0], args.data());
      _exit(127);
    }
  }
  int stop() {  // SIGTERM, then the exit status (-1 if it did not exit normally)
    if (pid <= 0) return -1;
    kill(pid, SIGTERM);
    int status = 0;
    waitpid(pid, &status, 0);
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  ~child() {
    if (pid > 0) stop();
  }
};

bool answers(const std::string& url, const sw::net::client_options& o = {}) {
  try {
    return sw::net::http_fetch(url, "GET", {}, {}, o).status == 200;
  } catch (const std::exception&) {
    return false;
  }
}

// One participant: streams 16 kHz PCM at real-time pace through the proxy, reconnects (as the demo page does)
// when its instance closes 1001, sends stop at the end and reads until its close.
struct participant {
  std::string room, identity;
  std::set<std::string> finals;                  // utteranceIds of every final this client saw
  std::map<std::string, int> finals_by_speaker;  // speakerId -> finals seen
  int closes_1001 = 0, reconnects = 0;
  std::uint16_t last_close = 0;
  std::string error;
  std::atomic<int>* heard = nullptr;  // bit n: a final of speaker "p<n>" seen; read by the test's own thread

  void take(const sw::net::ws_client::message& m) {
    if (m.kind != sw::net::ws_client::message::text || field(m.data, "type") != "transcript_final") return;
    finals.insert(field(m.data, "utteranceId"));
    ++finals_by_speaker[field(m.data, "speakerId")];
    const auto speaker = field(m.data, "speakerId");
    if (heard && speaker.size() == 2 && speaker[0] == 'p' && speaker[1] >= '0' && speaker[1] <= '9')
      heard->fetch_or(1 << (speaker[1] - '0'));
  }

  void run(const std::string& url, const sw::net::client_options& tls, std::chrono::milliseconds length) {
    auto connect = [&]() -> std::unique_ptr<sw::net::ws_client> {
      auto deadline = std::chrono::steady_clock::now() + 20s;
      for (;;) {
        try {
          return sw::net::ws_client::connect(url, tls);
        } catch (const std::exception& e) {
          if (std::chrono::steady_clock::now() > deadline) throw;
          std::this_thread::sleep_for(200ms);  // a client's backoff between attempts
        }
      }
    };
    try {
      auto c = connect();
      std::vector<std::int16_t> frame(320);
      const auto start = std::chrono::steady_clock::now();
      auto next = start;
      for (std::size_t n = 0; std::chrono::steady_clock::now() - start < length; ++n) {
        for (std::size_t i = 0; i < frame.size(); ++i)
          frame[i] = static_cast<std::int16_t>(8000 * std::sin(0.05 * static_cast<double>(n * 320 + i)));
        bool gone = false;
        try {
          c->send_binary(frame.data(), frame.size() * 2);
        } catch (const std::exception&) {
          gone = true;
        }
        for (;;) {
          auto m = c->read(1ms);
          if (m.kind == sw::net::ws_client::message::timeout) break;
          if (m.kind == sw::net::ws_client::message::closed) {
            if (m.close_code == 1001) ++closes_1001;
            gone = true;
            break;
          }
          take(m);
        }
        if (gone) {
          c = connect();
          ++reconnects;
        }
        next += 20ms;
        std::this_thread::sleep_until(next);  // real-time pace
      }
      c->send_text(R"({"type":"stop"})");
      for (;;) {
        auto m = c->read(30s);
        if (m.kind == sw::net::ws_client::message::closed) {
          last_close = m.close_code;
          break;
        }
        if (m.kind == sw::net::ws_client::message::timeout) {
          error = "no close within 30 s of stop";
          break;
        }
        take(m);
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
};

TEST(Proxy, TwoInstancesBehindHaproxyKeepRoomsTogetherHandOverOnSigtermAndStoreEveryFinalOnce) {
  const char* pg = std::getenv("SESSIONS_WS_TEST_PG");
  if (!pg) {
    if (std::getenv("CI")) FAIL() << "SESSIONS_WS_TEST_PG is not set: run through script/test";
    GTEST_SKIP() << "no PostgreSQL (script/test provides one)";
  }
  const std::string schema = "proxy_" + std::to_string(::getpid());
  {
    soci::session s(soci::postgresql, sw::pg_conninfo(pg));
    s << "DROP SCHEMA IF EXISTS " + schema + " CASCADE";
    s << "CREATE SCHEMA " + schema;
  }
  const std::string db = std::string(pg) + "?options=-csearch_path%3D" + schema;
  sw::test::test_pki pki;
  ASSERT_TRUE(pki.ok);
  const std::string dir = pki.dir.string();
  {
    std::ofstream pem(dir + "/proxy.pem");
    pem << std::ifstream(pki.file("server.pem")).rdbuf() << std::ifstream(pki.file("server.key")).rdbuf();
  }
  sw::test::fake_gladia gladia;

  // Two instances on one database, one after the other (each migrates under a lock anyway).
  const int ports[2] = {free_port(), free_port()};
  std::vector<std::unique_ptr<child>> instances;
  for (int i = 0; i < 2; ++i) {
    instances.push_back(std::make_unique<child>(
        std::vector<std::string>{SESSIONS_WS_BIN},
        std::map<std::string, std::string>{{"PORT", std::to_string(ports[i])},
                                           {"HOST", "127.0.0.1"},
                                           {"TRANSCRIPTION_JWT_SECRET", sw::test::secret},
                                           {"SERVICE_API_SECRET", service_secret},
                                           {"GLADIA_API_URL", gladia.url()},
                                           {"GLADIA_API_KEY", "fake-gladia-key"},
                                           {"DATABASE_URL", db},
                                           {"PERSIST_JOURNAL_DIR", dir + "/journal" + std::to_string(i)},
                                           {"TRUSTED_PROXIES", "127.0.0.1"},
                                           {"LOG_LEVEL", "info"}},
        dir + "/instance" + std::to_string(i) + ".log"));
    const auto ready = "http://127.0.0.1:" + std::to_string(ports[i]) + "/ready";
    ASSERT_TRUE(sw::test::eventually([&] { return answers(ready); }, 20s)) << "instance " << i << " not ready";
  }

  const int proxy_port = free_port();
  child haproxy({"haproxy", "-db", "-f", std::string(SESSIONS_WS_SOURCE_DIR) + "/deploy/haproxy.cfg"},
                {{"SW_BIND", "127.0.0.1:" + std::to_string(proxy_port)},
                 {"SW_CERT", dir + "/proxy.pem"},
                 {"SW_INSTANCE_1", "127.0.0.1:" + std::to_string(ports[0])},
                 {"SW_INSTANCE_2", "127.0.0.1:" + std::to_string(ports[1])}},
                dir + "/haproxy.log");
  sw::net::client_options tls;
  tls.ca_file = pki.file("ca.pem");
  const std::string proxy = "localhost:" + std::to_string(proxy_port);
  ASSERT_TRUE(sw::test::eventually([&] { return answers("https://" + proxy + "/ready", tls); }, 20s))
      << "the proxy does not answer";

  // The proxy routes by the token's room; the instance still authorizes: room A's token asking for room B.
  try {
    sw::net::ws_client::connect(
        "wss://" + proxy + "/api/realtime/transcribe?sessionSlug=room-b&token=" + harness::token("room-a", "mallory"),
        tls);
    ADD_FAILURE() << "a token for room-a was admitted to room-b";
  } catch (const sw::net::upgrade_rejected& e) {
    EXPECT_EQ(e.status, 403u) << e.body;
  }

  // 8 rooms x 3 participants through wss:// on the proxy, 8 s of audio each; instance 1 gets SIGTERM mid-stream.
  std::vector<participant> people;
  for (int r = 0; r < 8; ++r)
    for (int p = 0; p < 3; ++p) {
      participant one;
      one.room = "room-" + std::to_string(r);
      one.identity = "p" + std::to_string(p);
      people.push_back(std::move(one));
    }
  std::vector<std::atomic<int>> heard(people.size());
  for (std::size_t i = 0; i < people.size(); ++i) people[i].heard = &heard[i];
  std::vector<std::thread> threads;
  for (auto& p : people) {
    const auto url = "wss://" + proxy + "/api/realtime/transcribe?token=" + harness::token(p.room, p.identity);
    threads.emplace_back([&p, url, &tls] { p.run(url, tls, 8s); });
  }
  auto clients_on = [&](int i) {
    try {
      return field(sw::net::http_fetch("http://127.0.0.1:" + std::to_string(ports[i]) + "/metrics").body,
                   "sessionClients");
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
  };
  ASSERT_TRUE(sw::test::eventually(
      [&] {
        auto a = clients_on(0), b = clients_on(1);
        return a != "{}" && b != "{}" && a.find("room-") != std::string::npos && b.find("room-") != std::string::npos;
      },
      5s))
      << "both instances should carry rooms: " << clients_on(0) << " / " << clients_on(1);
  // The drain starts once every participant has heard a final of each of its room's three speakers: every room's
  // streams are well under way, and each room was on one instance before the move (after it, one is left). Waiting
  // for any final at all once failed in a sanitized build under the whole suite: a participant had seen no final of
  // one room-mate by the end, most likely missed in the gap of a reconnect that came late.
  EXPECT_TRUE(sw::test::eventually(
      [&] { return std::all_of(heard.begin(), heard.end(), [](const std::atomic<int>& n) { return n == 0b111; }); },
      6s));
  const auto on_first = clients_on(0);
  EXPECT_EQ(instances[0]->stop(), 0) << "instance 1 did not drain and exit 0";
  for (auto& t : threads) t.join();

  int moved = 0;
  for (auto& p : people) {
    SCOPED_TRACE(p.room + "/" + p.identity);
    EXPECT_EQ(p.error, "");
    EXPECT_EQ(p.last_close, 1000);
    if (on_first.find("\"" + p.room + "\"") != std::string::npos) {
      EXPECT_EQ(p.closes_1001, 1) << "a stream of instance 1 ends with 1001";
      EXPECT_EQ(p.reconnects, 1);
      ++moved;
    } else {
      EXPECT_EQ(p.closes_1001, 0);
    }
    for (auto& q : people) {  // only possible if the whole room was on one instance, before and after the move
      if (q.room == p.room) {
        EXPECT_GT(p.finals_by_speaker[q.identity], 0) << "no final of " << q.identity;
      }
    }
  }
  EXPECT_GT(moved, 0);

  // Through the proxy, each room's stored transcript: every final any of its clients saw, exactly once.
  for (int r = 0; r < 8; ++r) {
    const std::string room = "room-" + std::to_string(r);
    SCOPED_TRACE(room);
    std::set<std::string> seen;
    for (auto& p : people)
      if (p.room == room) seen.insert(p.finals.begin(), p.finals.end());
    std::string body;
    std::multiset<std::string> stored;
    bool complete = sw::test::eventually(
        [&] {
          auto res = sw::net::http_fetch("https://" + proxy + "/api/sessions/" + room + "/transcript", "GET", {},
                                         {{"Authorization", "Bearer " + service_secret}}, tls);
          if (res.status != 200) return false;
          body = res.body;
          stored.clear();
          for (std::size_t at = 0; (at = body.find("\"utteranceId\":\"", at)) != std::string::npos;) {
            at += 15;
            stored.insert(body.substr(at, body.find('"', at) - at));
          }
          for (auto& id : seen)
            if (stored.count(id) == 0) return false;
          return true;
        },
        10s);
    EXPECT_TRUE(complete) << body;
    for (auto& id : seen) EXPECT_EQ(stored.count(id), 1u) << id;
    EXPECT_EQ(std::set<std::string>(stored.begin(), stored.end()).size(), stored.size()) << "a final stored twice";
  }
  instances[1]->stop();
  haproxy.stop();
  soci::session s(soci::postgresql, sw::pg_conninfo(pg));
  s << "DROP SCHEMA IF EXISTS " + schema + " CASCADE";
}

}  // namespace
