#!/usr/bin/env bash
# Two builds of copanel under the same load, alternating runs in one script, so a change is
# judged against its baseline at the same moment on the same machine (BENCHMARKS.md).
#
#   scripts/ab.sh BASE_BIN NEW_BIN                  # e.g. /tmp/base/copanel target/release/copanel
#   RATES=8000,10000 REPEATS=5 scripts/ab.sh A B
#
# Each round runs A then B at every rate (order flipped on odd rounds, so neither always runs
# on a warmer machine), one line per run, then prints per rate the median delivered rate and
# p50/p99 of each, and the median hypervisor steal of its runs (the load tool's `steal`: on a VM,
# a side whose runs had much more of it than the other's was measured on a busier host). Uses
# the load tool of CARGO_TARGET_DIR (default ./target), built if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 2 ]; then
  echo "usage: scripts/ab.sh BASE_COPANEL_BIN NEW_COPANEL_BIN" >&2
  exit 2
fi
A=$1
B=$2
for bin in "$A" "$B"; do
  [ -x "$bin" ] || { echo "ab: $bin is not an executable" >&2; exit 2; }
done
RATES=${RATES:-8000}
REPEATS=${REPEATS:-3}
WARMUP=${WARMUP:-2}
DURATION=${DURATION:-5}
SESSIONS=${SESSIONS:-1000}
MEMBERS=${MEMBERS:-5}
DURABILITY=${DURABILITY:-sync}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LOAD="$TARGET_DIR/release/examples/load"
[ -x "$LOAD" ] || cargo build --release --example load

OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
run() { # label bin rate
  local line
  line=$("$LOAD" --spawn "$2" --durability "$DURABILITY" --sessions "$SESSIONS" \
    --members "$MEMBERS" --rates "$3" --warmup "$WARMUP" --duration "$DURATION" 2>/dev/null |
    grep '^target=' || true)
  echo "$1 rate=$3 $line" | tee -a "$OUT"
}
echo "== A=$A B=$B rates=$RATES repeats=$REPEATS load=$(cut -d' ' -f1-3 /proc/loadavg)"
IFS=, read -ra rates <<<"$RATES"
# The first run after a pause is slower for any binary (caches, page cache, CPU clocks): one run
# of A is thrown away first, so that neither side's first round pays it. (Before the seventh
# pass the load tool itself stalled in every fresh process's first run, so every run here paid
# that too; BENCHMARKS.md.)
"$LOAD" --spawn "$A" --durability "$DURABILITY" --sessions "$SESSIONS" --members "$MEMBERS" \
  --rates "${rates[0]}" --warmup 1 --duration 2 >/dev/null 2>&1 || true
for ((i = 0; i < REPEATS; i++)); do
  for r in "${rates[@]}"; do
    if ((i % 2 == 0)); then run A "$A" "$r"; run B "$B" "$r"; else run B "$B" "$r"; run A "$A" "$r"; fi
  done
done
echo "== medians"
for r in "${rates[@]}"; do
  for side in A B; do
    grep "^$side rate=$r " "$OUT" | awk -v side="$side" -v rate="$r" '
      function med(a, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      }
      {
        for (f = 1; f <= NF; f++) {
          split($f, kv, "=")
          if (kv[1] == "delivered_per_s") d[NR] = kv[2]
          if (kv[1] == "p50_ms") p50[NR] = kv[2]
          if (kv[1] == "p99_ms") p99[NR] = kv[2]
          if (kv[1] == "steal" && kv[2] != "?") st[++ns] = kv[2]
        }
        n = NR
      }
      END {
        if (n == 0) { printf "%s rate=%s no runs\n", side, rate; exit }
        printf "%s rate=%s runs=%d delivered_per_s=%.0f p50_ms=%.2f p99_ms=%.2f steal_pct=%s\n", side, rate, n, med(d, n), med(p50, n), med(p99, n), (ns ? sprintf("%.1f", med(st, ns)) : "?")
      }'
  done
done
