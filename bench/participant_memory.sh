#!/usr/bin/env bash
# What each participant holds on the server's heap: N participants (rooms of 1) stream through the server against
# the loadgen's embedded fake Gladia, the server runs under heaptrack, and the heap at its peak is split by
# allocation site (the innermost frame of our own code; Beast, Asio and CAF sites without one by their own frames),
# in bytes per participant. Kernel socket buffers are not on the heap: the loadgen's "kernel TCP buffers" row
# reports them. The server runs on core SERVER_CPU (0), the loadgen on TOOL_CPU (1), as in script/bench. The peak
# is one moment (what is in flight then varies from run to run by a few KiB per participant).
#   bench/participant_memory.sh [BUILD_DIR (build: RelWithDebInfo, for symbols)] [N (1000)] [SECONDS (8)]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-1000}
seconds=${3:-8}
command -v heaptrack >/dev/null || { echo "needs heaptrack (apt-get install heaptrack)" >&2; exit 2; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
port=$(free_port) upstream=$(free_port)
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
ulimit -n 65536 2>/dev/null || true
PORT=$port HOST=127.0.0.1 TRANSCRIPTION_JWT_SECRET=bench-secret GLADIA_API_URL="http://127.0.0.1:$upstream" \
  GLADIA_API_KEY=fake-gladia-key DATABASE_URL="sqlite3://db=$work/sessions.db" PERSIST_JOURNAL_DIR="$work/journal" \
  MAX_STREAMS=100000 MAX_STREAMS_PER_ROOM=100000 LOG_LEVEL=error \
  taskset -c "${SERVER_CPU:-0}" heaptrack -o "$work/heap" "$build/sessions-ws" >/dev/null 2>&1 &
for _ in $(seq 400); do curl -sf "localhost:$port/health" >/dev/null 2>&1 && break; sleep 0.05; done
pid=$(pgrep -n -f "^$build/sessions-ws$" || pgrep -n -f "$build/sessions-ws")
taskset -c "${TOOL_CPU:-1}" "$build/sessions-ws-loadgen" --url "ws://127.0.0.1:$port" --secret bench-secret --participants "$n" --ramp 500 \
  --duration "$seconds" --embedded-upstream "$upstream" --server-pid "$pid" --quiet |
  grep -E "server RSS|kernel TCP|verdict" || true
kill "$pid"
wait 2>/dev/null || true
heaptrack_print -f "$work"/heap.*zst -p 0 -a 0 -T 0 -l 0 -F "$work/peak.txt" --flamegraph-cost-type peak 2>/dev/null |
  grep -E "peak heap memory"
python3 - "$work/peak.txt" "$n" <<'PY'
import collections, sys
path, n = sys.argv[1], int(sys.argv[2])
by, total = collections.Counter(), 0
for line in open(path):
    stack, _, size = line.rstrip().rpartition(" ")
    size = int(size)
    total += size
    frames = stack.split(";")
    site = next((f for f in reversed(frames) if "sw::" in f), None)
    if site is None:  # no frame of ours: name the site by its three innermost frames
        site = "  <- ".join(f[:60] for f in reversed(frames[-3:]))
    by[site[:150]] += size
print(f"heap at the peak: {total / n:.0f} bytes per participant; the largest sites:")
for site, size in by.most_common(25):
    print(f"{size / n:8.0f}  {site}")
PY
