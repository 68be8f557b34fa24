#!/usr/bin/env bash
# Offline recognizer cost: CPU seconds per audio second and resident memory of the server with 1 stream and
# with N concurrent streams (N = LOCAL_STT_MAX_STREAMS), streaming the pocketsphinx-testdata recordings at
# real-time pace; and the delay from the end of a recording (stop sent) to its last final.
#   bench/local_stt.sh [BUILD_DIR] [N]
set -euo pipefail
build=${1:-build}
n=${2:-4}
data=/usr/share/pocketsphinx/test/data/librivox
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
secret=bench-secret
PORT=$port HOST=127.0.0.1 TRANSCRIPTION_JWT_SECRET=$secret DATABASE_URL=none STT_PROVIDER=local \
  LOCAL_STT_MAX_STREAMS=$n LOG_LEVEL=error "$build/sessions-ws" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "localhost:$port/health" >/dev/null && break; sleep 0.05; done
ticks=$(getconf CLK_TCK)
cpu() { awk -v t="$ticks" '{print ($14+$15)/t}' "/proc/$pid/stat"; }
rss() { awk '/VmRSS/{print int($2/1024)}' "/proc/$pid/status"; }
audio_seconds() { python3 - "$@" <<'PY'
import sys, wave
print(sum(wave.open(f).getnframes() / wave.open(f).getframerate() for f in sys.argv[1:]))
PY
}
run() { # streams files concurrently, one client each
  local i=0
  for f in "$@"; do
    "$build/sessions-ws-stream" --url "ws://127.0.0.1:$port" --secret $secret --room bench --identity "s$i" "$f" \
      >/dev/null 2>&1 &
    i=$((i + 1))
  done
  wait $(jobs -p | grep -v "^$pid$") 2>/dev/null || true
}
files=("$data"/*.wav)
c0=$(cpu); run "${files[0]}"; c1=$(cpu)
a1=$(audio_seconds "${files[0]}")
echo "local STT, 1 stream: $(python3 -c "print(round(($c1-$c0)/$a1,3))") CPU s per audio s, server RSS $(rss) MiB"
set -- ; for i in $(seq 0 $((n - 1))); do set -- "$@" "${files[$((i % ${#files[@]}))]}"; done
c0=$(cpu); run "$@"; c1=$(cpu)
an=$(audio_seconds "$@")
echo "local STT, $n streams: $(python3 -c "print(round(($c1-$c0)/$an,3))") CPU s per audio s, server RSS $(rss) MiB"
# end of audio (stop) -> last final: --fast streams at 2x; the tool prints when the server closes after the drain
start=$(date +%s.%N)
"$build/sessions-ws-stream" --fast --url "ws://127.0.0.1:$port" --secret $secret --room bench --identity lat \
  "${files[1]}" >/dev/null 2>&1
end=$(date +%s.%N)
dur=$(audio_seconds "${files[1]}")
echo "local STT: a ${dur}s recording at 2x took $(python3 -c "print(round($end-$start,2))")s; stop -> last final + close: $(python3 -c "print(round(($end-$start)-$dur/2,2))")s"
