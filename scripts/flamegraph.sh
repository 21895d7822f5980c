#!/usr/bin/env bash
# A flame graph of the server under the load tool, and the figures behind it (BENCHMARKS.md,
# eighth pass).
#
#   scripts/flamegraph.sh RATE OUT                 # copanel at RATE commands/s: OUT.svg, OUT.folded, OUT.txt
#   scripts/flamegraph.sh --bare RATE OUT          # the bare baseline the same way
#
# Builds copanel (or examples/bare) with the `profiling` profile (release code with debug info),
# then runs `scripts/threads.sh` with `PERF`: the load tool's 1000 sessions x 5 = 5000
# connections at RATE, `sync`, a thrown-away first run, and `perf record --call-graph dwarf` of
# the server for SAMPLE seconds (default 4) of the second run's window, at PERF_FREQ samples/s
# (default 999). Then `perf script` | `inferno-collapse-perf` folds the stacks into OUT.folded,
# `inferno-flamegraph` draws OUT.svg (one tower per thread name: copanel-writer,
# tokio-rt-worker, sled-io-*), and `examples/stacks` prints each thread's share, the share of
# the parts BENCHMARKS.md discusses and the functions with the most samples of their own.
# OUT.txt keeps threads.sh's lines and that breakdown. Frames under MINWIDTH percent of the
# samples (default 0.5) are left out of the SVG, which keeps it near 200 KB; OUT.folded has all.
#
# Needs Linux `perf` (with permission to record: root or kernel.perf_event_paranoid <= 1) and
# inferno's two tools, which it installs into ~/.cargo/bin on first use (`cargo install --locked
# inferno --version 0.12.8`; inferno is CDDL-1.0, a tool run beside the build, not a dependency
# of copanel).
set -euo pipefail
CALLER=$PWD
cd "$(dirname "$0")/.."

KIND=copanel
if [ "${1:-}" = --bare ]; then
  KIND=bare
  shift
fi
if [ $# -ne 2 ]; then
  echo "usage: scripts/flamegraph.sh [--bare] RATE OUT" >&2
  exit 2
fi
RATE=$1
# Relative to where it was run from, not to the repository root this script works in.
OUT=$(cd "$CALLER" && realpath -m -- "$2")
command -v perf >/dev/null || { echo "flamegraph: needs Linux perf on the PATH" >&2; exit 2; }
have_inferno() { command -v inferno-flamegraph >/dev/null && command -v inferno-collapse-perf >/dev/null; }
if ! have_inferno; then
  echo "flamegraph: installing inferno 0.12.8 (cargo install --locked inferno --version 0.12.8)" >&2
  cargo install --locked inferno --version 0.12.8
  have_inferno || {
    echo "flamegraph: inferno is installed but not on the PATH; add cargo's bin directory (~/.cargo/bin)" >&2
    exit 2
  }
fi
TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release --example load --example stacks
if [ "$KIND" = bare ]; then
  cargo build --profile profiling --example bare
  BIN="$TARGET_DIR/profiling/examples/bare"
  TITLE="bare baseline, $RATE cmd/s x 5 members, 5000 connections"
  ARGS=(--bare "$BIN")
else
  cargo build --profile profiling --bin copanel
  BIN="$TARGET_DIR/profiling/copanel"
  TITLE="copanel, $RATE cmd/s x 5 members, 5000 connections, sync"
  ARGS=("$BIN")
fi

DATA=$(mktemp)
ERR=$(mktemp)
trap 'rm -f "$DATA" "$ERR"' EXIT
PERF="$DATA" PERF_FREQ="${PERF_FREQ:-999}" scripts/threads.sh "${ARGS[@]}" "$RATE" | tee "$OUT.txt"
[ -s "$DATA" ] || { echo "flamegraph: perf recorded nothing" >&2; exit 1; }
# `perf script` resolves the DWARF call graphs, inlined frames included: tens of seconds.
perf script -i "$DATA" 2>"$ERR" | inferno-collapse-perf >"$OUT.folded" ||
  { echo "flamegraph: perf script or inferno-collapse-perf failed:" >&2; cat "$ERR" >&2; exit 1; }
inferno-flamegraph --title "$TITLE" --subtitle "$(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'); perf cpu-clock at ${PERF_FREQ:-999} Hz" \
  --hash --colors rust --minwidth "${MINWIDTH:-0.5}" "$OUT.folded" >"$OUT.svg"
echo
"$TARGET_DIR/release/examples/stacks" "$OUT.folded" | tee -a "$OUT.txt"
echo "flamegraph: wrote $OUT.svg, $OUT.folded and $OUT.txt"
