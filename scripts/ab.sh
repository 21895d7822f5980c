#!/usr/bin/env bash
# Builds of copanel (and optionally the bare baseline) under the same load, alternating runs in
# one script, so a change is judged against its baseline at the same moment on the same machine
# (BENCHMARKS.md).
#
#   scripts/ab.sh BASE_BIN NEW_BIN                  # e.g. /tmp/base/copanel target/release/copanel
#   RATES=8000,10000 REPEATS=5 scripts/ab.sh A B
#   scripts/ab.sh A B C bare:target/release/examples/bare   # more sides; bare:BIN is the baseline
#
# The sides are labelled A, B, C, … in the order given. Each round runs every side at every rate,
# one line per run; round i starts with side i (mod the number of sides), so no side always runs
# first, on a warmer machine. Then it prints per rate and side the median delivered rate, p50 and
# p99, how busy the machine was (the load tool's `cpu_busy`) and the hypervisor steal of its runs
# (on a VM, a side whose runs had much more steal than another's was measured on a busier host).
# Uses the load tool of CARGO_TARGET_DIR (default ./target), built if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
  echo "usage: scripts/ab.sh COPANEL_BIN COPANEL_BIN [COPANEL_BIN | bare:BARE_BIN ...]" >&2
  exit 2
fi
ALPHABET=ABCDEFGHIJKLMNOPQRSTUVWXYZ
if [ $# -gt ${#ALPHABET} ]; then
  echo "ab: at most 26 sides (A to Z)" >&2
  exit 2
fi
SIDES=("$@")
LABELS=()
for ((s = 0; s < ${#SIDES[@]}; s++)); do
  bin=${SIDES[s]#bare:}
  [ -x "$bin" ] || { echo "ab: $bin is not an executable" >&2; exit 2; }
  LABELS+=("${ALPHABET:s:1}")
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
# One load run against a side: copanel started with --spawn, bare (`bare:BIN`) with --bare.
load() { # side rate warmup duration
  local server
  case $1 in
    bare:*) server=(--target bare --bare "${1#bare:}") ;;
    *) server=(--spawn "$1") ;;
  esac
  "$LOAD" "${server[@]}" --durability "$DURABILITY" --sessions "$SESSIONS" \
    --members "$MEMBERS" --rates "$2" --warmup "$3" --duration "$4"
}
run() { # label side rate
  local line
  line=$(load "$2" "$3" "$WARMUP" "$DURATION" 2>/dev/null | grep '^target=' || true)
  echo "$1 rate=$3 $line" | tee -a "$OUT"
}
desc=""
for ((s = 0; s < ${#SIDES[@]}; s++)); do desc+="${LABELS[s]}=${SIDES[s]} "; done
echo "== ${desc}rates=$RATES repeats=$REPEATS load=$(cut -d' ' -f1-3 /proc/loadavg)"
IFS=, read -ra rates <<<"$RATES"
# The first run after a pause is slower for any binary (caches, page cache, CPU clocks): one run
# of the first side is thrown away first, so that no side's first round pays it. (Before the
# seventh pass the load tool itself stalled in every fresh process's first run, so every run
# here paid that too; BENCHMARKS.md.)
load "${SIDES[0]}" "${rates[0]}" 1 2 >/dev/null 2>&1 || true
n=${#SIDES[@]}
for ((i = 0; i < REPEATS; i++)); do
  for r in "${rates[@]}"; do
    for ((k = 0; k < n; k++)); do
      s=$(((i + k) % n))
      run "${LABELS[s]}" "${SIDES[s]}" "$r"
    done
  done
done
echo "== medians"
for r in "${rates[@]}"; do
  for side in "${LABELS[@]}"; do
    grep "^$side rate=$r " "$OUT" | awk -v side="$side" -v rate="$r" '
      function med(a, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      }
      function opt(a, n) { return n ? sprintf("%.1f", med(a, n)) : "?" }
      {
        for (f = 1; f <= NF; f++) {
          split($f, kv, "=")
          if (kv[1] == "delivered_per_s") d[NR] = kv[2]
          if (kv[1] == "p50_ms") p50[NR] = kv[2]
          if (kv[1] == "p99_ms") p99[NR] = kv[2]
          if (kv[1] == "cpu_busy" && kv[2] != "?") busy[++nb] = kv[2]
          if (kv[1] == "steal" && kv[2] != "?") st[++ns] = kv[2]
        }
        n = NR
      }
      END {
        if (n == 0) { printf "%s rate=%s no runs\n", side, rate; exit }
        printf "%s rate=%s runs=%d delivered_per_s=%.0f p50_ms=%.2f p99_ms=%.2f cpu_busy_pct=%s steal_pct=%s\n", side, rate, n, med(d, n), med(p50, n), med(p99, n), opt(busy, nb), opt(st, ns)
      }'
  done
done
