#!/usr/bin/env bash
# A long run against one server process: ROUNDS rounds of sessions-ws-loadgen (N participants in rooms of ROOM,
# SECONDS s of audio each) through one sessions-ws (persistence with its journal: SQLite in a scratch directory by
# default, a throwaway PostgreSQL 15 cluster with DB=postgres, or the database at DATABASE_URL) and one
# sessions-ws-fake-gladia. In every STALL_EVERY-th round the fake is stopped (SIGSTOP) for STALL_S s in the middle of
# the round, longer than the server's ack timeout (STT_ACK_TIMEOUT_MS, 2 000 here): each stream's upstream connection
# is dropped, reconnected and its unacknowledged audio replayed, while the participants stream on.
#
# After each round, once the server is idle (no connection, no relay, the persistence queue empty and every final
# handed to it in the database), and once its heap was trimmed after that (every MEMORY_TRIM_INTERVAL_MS, 10 s), one
# line: the round's frames lost; the server's heap in use and anonymous RSS, descriptors, threads and live session
# actors; the rows the round stored against the finals the fake sent; the reconnects. Rows are counted from what the
# database held before round 1, so a database given with DATABASE_URL need not be empty (nothing else may write to
# its TranscriptSegment table meanwhile). It fails (exit 1) when a round loses a frame, a participant does not stop
# cleanly, the server is not idle within IDLE_WAIT s, a final handed to persistence is not stored, a session actor or a
# descriptor outlives its round, an ack timeout did not lead to a reconnect (each drops its connection once), a stream
# of the round has no final for some moment of its audio (see covered, below), or the rows are not the fake's finals,
# stalled rounds included: a final the fake wrote to a connection the server had already dropped is recovered from the
# session's post_transcript (column "recovered"). Only where sessions were left mid-stream (column "renewed") may the
# rows be fewer, every stream covered: the fake counts a lost session's last final of audio the next one took again.
# Memory is for reading: the heap after each round, round after round.
#   bench/soak.sh [BUILD_DIR (build-release)] [ROUNDS (20)] [N (200)] [SECONDS (60)]
#   knobs: ROOM (4), STALL_EVERY (4; 0: never), STALL_S (3), IDLE_WAIT (60), SERVER_CPU (0), TOOL_CPU (1),
#          DB (sqlite; postgres: a throwaway cluster), DATABASE_URL (sqlite3://db=PATH or postgresql://…; overrides DB),
#          EGRESS (0; 1: LiveKit egress streams, 48 kHz stereo to /egress/audio, instead of browser participants;
#          their frames are resampled, so no tag reaches the fake and loss per frame is not measured: the rows are),
#          SESSION_LIMIT_MS (0: never; else the fake ends each Gladia session when its audio would pass that much, as
#          Gladia does at 3 hours: every stream goes on in new sessions, column "renewed"; five sessions in a row
#          shorter than a minute end a stream's transcription, as they would with Gladia: below 60 000, keep SECONDS
#          under 5 × the limit),
#          LOSE_AFTER_MS (0: never; else the fake loses each Gladia session when its audio would pass that much, as
#          when the host that ran it goes away: its connection drops and no reconnect to its url gets through, so each
#          stream goes on in new sessions after 5 retries (about 6 s); they count in column "renewed", and the same
#          rule of five short sessions holds)
# The rounds' reports, the fake's and the server's logs go to bench/results/soak-<time>/ (git-ignored), the table to
# its summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-release}
rounds=${2:-20}
n=${3:-200}
seconds=${4:-60}
egress=$([ "${EGRESS:-0}" = 1 ] && echo --egress || true)
room=${ROOM:-4} stall_every=${STALL_EVERY:-4} stall_s=${STALL_S:-3} idle_wait=${IDLE_WAIT:-60}
for b in sessions-ws sessions-ws-loadgen tests/sessions-ws-fake-gladia; do
  [ -x "$build/$b" ] || { echo "soak: $build/$b is missing (script/bench builds build-release)" >&2; exit 2; }
done
case ${DATABASE_URL:-sqlite3://db=} in
  sqlite3://db=*|postgresql://*|postgres://*) ;;
  *) echo "soak: DATABASE_URL must be sqlite3://db=PATH or postgresql://… (rows are counted in it)" >&2; exit 2 ;;
esac
case ${DB:-sqlite} in sqlite|postgres) ;; *) echo "soak: DB is sqlite or postgres, not '$DB'" >&2; exit 2 ;; esac
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
port=$(free_port) upstream=$(free_port)
out=bench/results/soak-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
work=$(mktemp -d)
server="" fake=""
stop_pg() { :; }
db_url=${DATABASE_URL:-}
if [ -z "$db_url" ]; then
  case ${DB:-sqlite} in
    sqlite) db_url="sqlite3://db=$work/sessions.db" ;;
    postgres) . script/lib/pg.sh && db_url=$PG_URL ;;  # defines stop_pg, called by cleanup below
  esac
fi
cleanup() {
  [ -z "$fake" ] || kill -CONT "$fake" 2>/dev/null || true
  kill $server $fake 2>/dev/null || true
  wait 2>/dev/null || true
  stop_pg
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || true

taskset -c "${TOOL_CPU:-1}" "$build/tests/sessions-ws-fake-gladia" --port "$upstream" \
  $([ "${SESSION_LIMIT_MS:-0}" -gt 0 ] && echo --session-limit-ms "$SESSION_LIMIT_MS") \
  $([ "${LOSE_AFTER_MS:-0}" -gt 0 ] && echo --lose-after-ms "$LOSE_AFTER_MS") >"$out/fake.log" 2>&1 &
fake=$!
PORT=$port HOST=127.0.0.1 TRANSCRIPTION_JWT_SECRET=soak-secret GLADIA_API_URL="http://127.0.0.1:$upstream" \
  GLADIA_API_KEY=fake-gladia-key DATABASE_URL="$db_url" PERSIST_JOURNAL_DIR="$work/journal" \
  SERVICE_API_SECRET=soak-secret STT_ACK_TIMEOUT_MS=2000 MAX_STREAMS=100000 MAX_STREAMS_PER_ROOM=100000 LOG_LEVEL=warn \
  taskset -c "${SERVER_CPU:-0}" "$build/sessions-ws" 2>"$out/server.log" &
server=$!
up=no
for _ in $(seq 400); do
  curl -sf "127.0.0.1:$port/health" >/dev/null 2>&1 && curl -sf "127.0.0.1:$upstream/stats" >/dev/null 2>&1 && up=yes && break
  kill -0 "$server" 2>/dev/null || break
  sleep 0.05
done
[ $up = yes ] || { echo "soak: the server or the fake did not come up; see $out/server.log, $out/fake.log" >&2; exit 1; }

# The rows in the database's TranscriptSegment table (0 before the server's migrations created it).
rows_in_db() {
  case $db_url in
    sqlite3://db=*)
      python3 - "${db_url#sqlite3://db=}" <<'PY'
import sqlite3, sys
try:
    print(sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=5).execute(
        'SELECT count(*) FROM "TranscriptSegment"').fetchone()[0])
except sqlite3.Error:  # not created yet
    print(0)
PY
      ;;
    *) psql "$db_url" -XAtqc 'SELECT count(*) FROM "TranscriptSegment"' 2>/dev/null || echo 0 ;;
  esac
}

# Whether every stream first seen since the last call has a final for every moment of its audio, one line: the number
# of such streams, then "ok" or the first stream that has not (a stretch with no final, or finals ending short of the
# SECONDS s the stream sent). A stream's finals are its rows whose utteranceId begins with its key; their times are
# the stream's start plus the upstream's (ms): one final ends where the next begins, a recovered one may overlap.
# This, not a count, is what says no transcript was lost: the fake counts each final it makes, and a Gladia session
# lost just after audio it took whose acknowledgment never reached the relay makes a last final of audio the next
# session takes (and transcribes) again.
covered() {
  python3 - "$db_url" "$seconds" "$work/checked" <<'PY'
import collections, datetime, os, subprocess, sys
url, seconds, checked_file = sys.argv[1], float(sys.argv[2]), sys.argv[3]
q = 'SELECT "utteranceId", "startedAt", "endedAt" FROM "TranscriptSegment"'
if url.startswith("sqlite3://db="):
    import sqlite3
    db = sqlite3.connect(f"file:{url[len('sqlite3://db='):]}?mode=ro", uri=True, timeout=5)
    when = lambda t: datetime.datetime.fromisoformat(t).timestamp()
    rows = [(u, when(a), when(b)) for u, a, b in db.execute(q)]
else:
    out = subprocess.run(["psql", url, "-XAtq", "-F", "|", "-c", q.replace('"startedAt", "endedAt"',
                         'extract(epoch from "startedAt"), extract(epoch from "endedAt")')],
                         capture_output=True, text=True, check=True).stdout
    rows = [(u, float(a), float(b)) for u, a, b in (l.split("|") for l in out.splitlines() if l)]
checked = set(open(checked_file).read().split()) if os.path.exists(checked_file) else set()
streams = collections.defaultdict(list)
for u, a, b in rows:
    key = u.split("-", 1)[0]
    if key not in checked:
        streams[key].append((a, b))
problem = "ok"
for key, finals in sorted(streams.items()):
    finals.sort()
    first, end = finals[0][0], finals[0][1]
    for a, b in finals[1:]:
        if a > end + 0.002:
            problem = f"stream {key}: no final for {end - first:.3f}-{a - first:.3f} s"
            break
        end = max(end, b)
    if problem == "ok" and end - first < seconds - 0.03:
        problem = f"stream {key}: finals end at {end - first:.3f} s of {seconds:g}"
    if problem != "ok":
        break
with open(checked_file, "a") as f:
    f.write("".join(k + "\n" for k in streams))
print(len(streams), problem)
PY
}

# The server's state, one line: RSS (anonymous, KiB), descriptors, threads, live session actors, rows in the
# database (those before round 1 not counted), finals handed to persistence, reconnects to the upstream, ack
# timeouts, finals recovered after a lost connection (those five since the start), the fake's finals
# (since the round's reset), idle (1: nothing in flight and every final handed to persistence stored), the heap's
# trims so far and what it had allocated at the last (KiB), sessions renewed, ended or lost (since the start).
state() {
  local rss fds threads
  rss=$(awk '/^RssAnon:/ {print $2}' "/proc/$server/status")
  fds=$(ls "/proc/$server/fd" | wc -l)
  threads=$(awk '/^Threads:/ {print $2}' "/proc/$server/status")
  python3 - "$rss" "$fds" "$threads" "$(($(rows_in_db) - rows_before))" "$(curl -sf "127.0.0.1:$port/metrics")" \
    "$(curl -sf "127.0.0.1:$upstream/stats")" <<'PY'
import json, sys
rss, fds, threads, rows = sys.argv[1:5]
m, f = json.loads(sys.argv[5]), json.loads(sys.argv[6])
sessions = m.get("actors", {}).get("session", {}).get("live", 0)
queued = m["queue"]["totalQueued"]
idle = (m["activeConnections"] == 0 and m["activeSttRelays"] == 0 and m["queue"]["queueLength"] == 0
        and int(rows) == queued)
c = m["counters"]
print(rss, fds, threads, sessions, rows, queued, c.get("gladia.reconnects", 0), c.get("gladia.ack_timeouts", 0),
      c.get("gladia.recovered_finals", 0), f["finals"], int(idle),
      c.get("memory.trims", 0), c.get("memory.heap_in_use_bytes", 0) // 1024,
      c.get("gladia.sessions_renewed", 0) + c.get("gladia.sessions_lost", 0))
PY
}

line() {
  printf '%-5s %-5s %-5s %-8s %-8s %-4s %-7s %-8s %-6s %-6s %-10s %-8s %-9s %-7s %s\n' "$@" | tee -a "$out/summary.txt"
}
line round stall lost "heap KiB" "RSS KiB" fds threads sessions rows finals reconnects timeouts recovered renewed verdict
rows_before=$(rows_in_db)
[ "$rows_before" = 0 ] || echo "soak: the database held $rows_before rows before round 1; counting from there" |
  tee -a "$out/summary.txt"
status=0 base_fds="" rows=0 queued=0 reconnects=0 timeouts=0 recovered=0 renewed=0
for r in $(seq 1 "$rounds"); do
  rows0=$rows queued0=$queued reconnects0=$reconnects timeouts0=$timeouts recovered0=$recovered renewed0=$renewed
  stalled=no
  taskset -c "${TOOL_CPU:-1}" "$build/sessions-ws-loadgen" --url "ws://127.0.0.1:$port" --secret soak-secret \
    --participants "$n" --room-size "$room" --ramp 200 --duration "$seconds" \
    --upstream-stats "http://127.0.0.1:$upstream" --server-pid "$server" --quiet --json "$out/round-$r.json" $egress \
    >"$out/round-$r.txt" 2>&1 &
  loadgen=$!
  if [ "$stall_every" -gt 0 ] && [ $((r % stall_every)) -eq 0 ]; then
    sleep $((seconds / 2))  # the middle of the round: every participant streams
    kill -STOP "$fake"
    sleep "$stall_s"
    kill -CONT "$fake"
    stalled=yes
  fi
  code=0
  wait "$loadgen" || code=$?
  read -r lost clean < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["lost"], d["stoppedCleanly"])' \
    "$out/round-$r.json" 2>/dev/null || echo "? 0") || true
  end=$((SECONDS + idle_wait))
  while :; do
    read -r rss fds threads sessions rows queued reconnects timeouts recovered finals idle trims heap renewed < <(state) ||
      true
    { [ "$idle" = 1 ] || [ $SECONDS -ge $end ]; } && break
    sleep 0.2
  done
  # the heap as the next trim finds it (every MEMORY_TRIM_INTERVAL_MS): what the idle server still holds
  idle_trims=$trims end=$((SECONDS + 15))
  while [ "$trims" = "$idle_trims" ] && [ $SECONDS -lt $end ]; do
    sleep 0.5
    read -r rss fds threads sessions rows queued reconnects timeouts recovered finals idle trims heap renewed < <(state) ||
      true
  done
  curl -sf "127.0.0.1:$port/metrics" >"$out/metrics-$r.json" || true  # the server's figures after the round
  curl -sf "127.0.0.1:$upstream/stats" >"$out/fake-$r.json" || true
  read -r streams coverage < <(covered || echo "0 the database could not be read") || true
  stored=$((rows - rows0)) handed=$((queued - queued0)) again=$((reconnects - reconnects0))
  timed_out=$((timeouts - timeouts0)) recovered_now=$((recovered - recovered0)) renewed_now=$((renewed - renewed0))
  [ -n "$base_fds" ] || base_fds=$fds
  verdict=ok
  if [ "$lost" != 0 ]; then verdict="frames lost"
  elif [ "$clean" != "$n" ]; then verdict="$((n - clean)) not stopped cleanly (loadgen exit $code)"
  elif [ "$idle" != 1 ]; then verdict="not idle after ${idle_wait} s (stored $stored of $handed finals handed to persistence)"
  elif [ "$sessions" != 0 ]; then verdict="$sessions session actors left"
  elif [ "$fds" -gt "$base_fds" ]; then verdict="descriptors $fds, after round 1 $base_fds"
  elif [ "$timed_out" -gt "$again" ]; then verdict="$timed_out ack timeouts, $again reconnects"
  elif [ "$coverage" != ok ]; then verdict="$coverage"
  elif [ "$streams" != "$n" ]; then verdict="finals of $streams streams, for $n participants"
  elif [ "$stored" -gt "$finals" ] || { [ "$stored" != "$finals" ] && [ "$renewed_now" = 0 ]; }; then
    verdict="stored $stored of the fake's $finals finals"
  elif [ "$stored" != "$finals" ]; then
    verdict="ok: every stream has a final for all of its audio; $((finals - stored)) fewer rows than the fake's finals"
  elif [ "${SESSION_LIMIT_MS:-0}" -gt 0 ] && [ "$seconds" -ge $((SESSION_LIMIT_MS / 1000 + 1)) ] &&
    [ "$renewed_now" -lt "$n" ]; then verdict="$renewed_now sessions renewed for $n streams"
  elif [ "${LOSE_AFTER_MS:-0}" -gt 0 ] && [ "$seconds" -ge $((LOSE_AFTER_MS / 1000 + 1)) ] &&
    [ "$renewed_now" -lt "$n" ]; then verdict="$renewed_now sessions renewed after a loss for $n streams"
  fi
  case $verdict in ok*) ;; *) status=1 ;; esac
  line "$r" "$stalled" "$lost" "$heap" "$rss" "$fds" "$threads" "$sessions" "$stored" "$finals" "$again" "$timed_out" \
    "$recovered_now" "$renewed_now" "$verdict"
done
echo "server log: $(grep -c . "$out/server.log" || true) lines, $(grep -c ' error ' "$out/server.log" || true) errors" |
  tee -a "$out/summary.txt"
echo "soak: $([ $status = 0 ] && echo passed || echo FAILED); reports in $out" | tee -a "$out/summary.txt"
exit $status
