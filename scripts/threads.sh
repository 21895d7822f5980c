#!/usr/bin/env bash
# Where the CPU goes, per thread, under the load tool (BENCHMARKS.md, third pass).
#
#   scripts/threads.sh COPANEL_BIN RATE          # e.g. scripts/threads.sh target/release/copanel 3000
#   scripts/threads.sh --bare BARE_BIN RATE      # the bare baseline the same way
#   PERF=out.data scripts/threads.sh target/profiling/copanel 3000   # also `perf record` the sample
#
# Runs `examples/load` (1000 sessions x 5 = 5000 connections, `sync`) at RATE commands/s twice in
# one process: the first run is thrown away (a fresh server's first run is slower), the second
# is sampled. During SAMPLE seconds of its window it reads, from /proc, each thread's CPU time
# (user and system), its time spent runnable but waiting for a CPU (schedstat) and its context
# switches, for the server and the load tool, and copanel's batches and events from /healthz.
# Prints the load tool's summary line, batches/s and events per batch, one line per thread
# (sled's IO threads summed) and the server's CPU per offered command. Linux only.
set -euo pipefail
cd "$(dirname "$0")/.."

KIND=copanel
if [ "${1:-}" = --bare ]; then
  KIND=bare
  shift
fi
if [ $# -ne 2 ]; then
  echo "usage: scripts/threads.sh [--bare] BIN RATE" >&2
  exit 2
fi
BIN=$1
RATE=$2
[ -x "$BIN" ] || { echo "threads: $BIN is not an executable" >&2; exit 2; }
SAMPLE=${SAMPLE:-4}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
LOAD="$TARGET_DIR/release/examples/load"
[ -x "$LOAD" ] || cargo build --release --example load
if [ "$KIND" = bare ]; then
  ARGS=(--target bare --bare "$BIN")
else
  ARGS=(--spawn "$BIN" --durability sync)
fi

TMP=$(mktemp -d)
LP=
SP=
# On any early exit, end the server too: killed by a signal, the load tool cannot stop it.
trap 'for p in $LP $SP; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"' EXIT
"$LOAD" "${ARGS[@]}" --rates "$RATE,$RATE" --warmup 2 --duration $((SAMPLE + 3)) \
  >"$TMP/out" 2>"$TMP/err" &
LP=$!
for _ in $(seq 1 300); do
  SP=$(pgrep -P "$LP" | head -1 || true)
  [ -n "$SP" ] && break
  sleep 0.1
done
[ -n "$SP" ] || { echo "threads: the server did not start" >&2; exit 1; }
# The second run's warm-up has begun once its line is on stderr; sample inside its window.
started=
for _ in $(seq 1 1200); do
  if [ "$(grep -c 'warm-up' "$TMP/err" || true)" -ge 2 ]; then
    started=1
    break
  fi
  sleep 0.1
done
[ -n "$started" ] || { echo "threads: the second run did not start (see the load tool's errors)" >&2; cat "$TMP/err" >&2; exit 1; }
sleep 2.5

snap() { # pid tid comm cpu_ns runq_ns switches utime_ticks stime_ticks
  for pid in "$SP" "$LP"; do
    for t in /proc/"$pid"/task/*; do
      local comm sched stat
      comm=$(tr ' ' '_' <"$t/comm" 2>/dev/null) || continue
      sched=$(cat "$t/schedstat" 2>/dev/null) || continue
      # utime and stime are fields 14 and 15, counted after `(comm)`, which may hold spaces.
      stat=$(sed 's/.*) //' "$t/stat" 2>/dev/null | awk '{print $12, $13}') || continue
      echo "$pid ${t##*/} $comm $sched $stat"
    done
  done
}
healthz() {
  [ "$KIND" = copanel ] || return 0
  local addr
  addr=$(tr '\0' ' ' <"/proc/$SP/cmdline" | sed -n 's/.*--listen \([^ ]*\).*/\1/p')
  { curl -s "http://$addr/healthz" || true; } | tr -d '{}"' | tr ',' '\n' |
    awk -F: '$1=="batches"{b=$2} $1=="events_appended"{e=$2} END{print b+0, e+0}'
}
H1=$(healthz)
T1=$(date +%s.%N)
snap >"$TMP/a"
if [ -n "${PERF:-}" ]; then
  # The same window, recorded for `perf report -i "$PERF"` (call graphs need a build with debug
  # info: `cargo build --profile profiling`).
  perf record -F "${PERF_FREQ:-499}" --call-graph dwarf,16384 -o "$PERF" -p "$SP" -- sleep "$SAMPLE" \
    >/dev/null 2>"$TMP/perf.err" || { echo "threads: perf record failed:" >&2; cat "$TMP/perf.err" >&2; }
else
  sleep "$SAMPLE"
fi
snap >"$TMP/b"
T2=$(date +%s.%N)
H2=$(healthz)
wait "$LP" || true
LP=
SP_DONE=$SP
SP=
# Seconds between the two snapshots, as measured.
S=$(awk -v a="$T1" -v b="$T2" 'BEGIN { printf "%.3f", b - a }')

grep '^target=' "$TMP/out" | tail -1
if [ "$KIND" = copanel ]; then
  echo "$H1 $H2" | awk -v s="$S" '{b=$3-$1; e=$4-$2; if (b > 0) printf "batches_per_s=%.0f events_per_batch=%.2f\n", b/s, e/b}'
fi
# A thread that started during the sample counts from zero; one that ended during it (sled's
# extra IO threads end after 1 s idle) is missing from the second snapshot and not counted.
awk -v sp="$SP_DONE" -v s="$S" -v rate="$RATE" -v hz="$(getconf CLK_TCK)" '
  FNR == NR { a[$1 " " $2] = $0; next }
  {
    if (($1 " " $2) in a) split(a[$1 " " $2], o, " ")
    else split("0 0 0 0 0 0 0 0", o, " ")
    who = ($1 == sp) ? "server" : "load"
    name = $3
    if (name ~ /^sled-io/) name = "sled-io (all)"
    else if (who == "server" && name ~ /^tokio/) name = name "[" $2 "]"
    k = who " " name
    cpu[k] += ($4 - o[4]) / 1e9 / s * 100
    wait[k] += ($5 - o[5]) / 1e9 / s * 100
    sw[k] += ($6 - o[6]) / s
    usr[k] += ($7 - o[7]) / hz / s * 100
    sys[k] += ($8 - o[8]) / hz / s * 100
    total[who] += ($4 - o[4]) / 1e9 / s * 100
  }
  END {
    for (k in cpu) if (cpu[k] >= 0.5)
      printf "%-34s cpu=%5.1f%% (usr %5.1f sys %5.1f) runq_wait=%5.1f%% switches_per_s=%6.0f\n", k, cpu[k], usr[k], sys[k], wait[k], sw[k] | "sort -k2,2 -t= -rn"
    close("sort -k2,2 -t= -rn")
    printf "server_cpu=%.1f%% load_tool_cpu=%.1f%% server_cpu_us_per_command=%.1f\n", total["server"], total["load"], total["server"] / 100 * 1e6 / rate
  }' "$TMP/a" "$TMP/b"
