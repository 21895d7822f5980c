#!/usr/bin/env bash
# Issue 6, one command: builds copanel and the load tools (release), runs copanel (sync acks),
# the bare fan-out baseline and, when node and npm are on the PATH, the Socket.IO peer
# (examples/socketio, `npm ci` there first) back to back at the same offered rates with 5000
# connections (1000 sessions x 5), prints one line per run plus copanel's ratios to each peer,
# and redraws the plot.
#
#   scripts/bench.sh                       # defaults below
#   RATES=2000,10000,20000,40000 REPEATS=5 DURATION=10 scripts/bench.sh
#   SOCKETIO=0 scripts/bench.sh            # copanel and bare only
#
# Output: stdout lines, bench-results/runs.csv (one row per run), docs/latency-vs-rate.svg.
# Uses CARGO_TARGET_DIR when set (default ./target).
set -euo pipefail
cd "$(dirname "$0")/.."

RATES=${RATES:-1000,2000,4000,8000,12000,20000}
REPEATS=${REPEATS:-3}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-5}
SESSIONS=${SESSIONS:-1000}
MEMBERS=${MEMBERS:-5}
DURABILITY=${DURABILITY:-sync}
OUT=${OUT:-bench-results}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
SOCKETIO=${SOCKETIO:-1}

cargo build --release --bin copanel --example load --example bare --example plot

PEERS=()
if [ "$SOCKETIO" != 0 ]; then
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    if (cd examples/socketio && npm ci --no-audit --no-fund); then
      PEERS=(--socketio examples/socketio/server.js)
    else
      echo "== npm ci in examples/socketio failed: the Socket.IO peer is left out" >&2
    fi
  else
    echo "== no node/npm on the PATH: the Socket.IO peer is left out (SOCKETIO=0 says so quietly)" >&2
  fi
fi

mkdir -p "$OUT"
CSV="$OUT/runs.csv"
rm -f "$CSV"
{
  echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM"
  echo "== node: $(node --version 2>/dev/null || echo none), for the Socket.IO peer"
  echo "== load average before: $(cat /proc/loadavg)"
} | tee "$OUT/machine.txt"

"$TARGET_DIR/release/examples/load" \
  --spawn "$TARGET_DIR/release/copanel" --bare "$TARGET_DIR/release/examples/bare" ${PEERS[@]+"${PEERS[@]}"} --compare \
  --durability "$DURABILITY" --sessions "$SESSIONS" --members "$MEMBERS" \
  --rates "$RATES" --repeats "$REPEATS" --warmup "$WARMUP" --duration "$DURATION" \
  --csv "$CSV" | tee "$OUT/summary.txt"

"$TARGET_DIR/release/examples/plot" "$CSV" docs/latency-vs-rate.svg
echo "== load average after: $(cat /proc/loadavg)" | tee -a "$OUT/machine.txt"
