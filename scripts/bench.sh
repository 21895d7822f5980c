#!/usr/bin/env bash
# Issue 6, one command: builds copanel and the load tools (release), runs copanel (sync acks)
# and the bare fan-out baseline back to back at the same offered rates with 5000 connections
# (1000 sessions x 5), prints one line per run plus copanel/bare ratios, and redraws the plot.
#
#   scripts/bench.sh                       # defaults below
#   RATES=2000,10000,20000,40000 REPEATS=5 DURATION=10 scripts/bench.sh
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

cargo build --release --bin copanel --example load --example bare --example plot

mkdir -p "$OUT"
CSV="$OUT/runs.csv"
rm -f "$CSV"
{
  echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM"
  echo "== load average before: $(cat /proc/loadavg)"
} | tee "$OUT/machine.txt"

"$TARGET_DIR/release/examples/load" \
  --spawn "$TARGET_DIR/release/copanel" --bare "$TARGET_DIR/release/examples/bare" --compare \
  --durability "$DURABILITY" --sessions "$SESSIONS" --members "$MEMBERS" \
  --rates "$RATES" --repeats "$REPEATS" --warmup "$WARMUP" --duration "$DURATION" \
  --csv "$CSV" | tee "$OUT/summary.txt"

"$TARGET_DIR/release/examples/plot" "$CSV" docs/latency-vs-rate.svg
echo "== load average after: $(cat /proc/loadavg)" | tee -a "$OUT/machine.txt"
