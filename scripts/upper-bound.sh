#!/usr/bin/env bash
# How fast could copanel be with a cheaper store? (BENCHMARKS.md, tenth pass.)
#
#   scripts/upper-bound.sh                          # RATES=6000,8000,10000 REPEATS=3
#   RATES=6000 REPEATS=5 scripts/upper-bound.sh
#
# Builds, in a throwaway git worktree of HEAD (uncommitted changes are not in it), copanel with
# `scripts/upper-bound.patch` applied. The patch is not part of copanel: it lets one environment
# variable replace what the store does with each batch. Then `scripts/ab.sh` runs four sides in
# alternating rounds under the load tool (5000 connections, `sync`):
#   A  sled   the patched build with the variable unset: copanel as it is;
#   B  file   each batch's records, encoded as for sled, appended to one file in the data
#             directory, and each flush one `fdatasync` of it: a durable log with no index;
#   C  none   batches dropped, flushes return at once: copanel with no log at all;
#   D  bare   the bare baseline (`examples/bare`).
# B and C are bounds, not servers: they keep nothing a restart could read. The worktree and its
# build live under CARGO_TARGET_DIR (default ./target)/upper-bound; the worktree is removed at
# the end, the build is kept for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."

export RATES=${RATES:-6000,8000,10000}
export REPEATS=${REPEATS:-3}
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
WORK=$TARGET_DIR/upper-bound
SRC=$WORK/src

cargo build --release --example load --example bare
git rev-parse --verify -q HEAD >/dev/null || { echo "upper-bound: not in a git checkout" >&2; exit 2; }
git worktree remove --force "$SRC" 2>/dev/null || rm -rf "$SRC"
mkdir -p "$WORK"
git worktree add -q --detach "$SRC" HEAD
trap 'git worktree remove --force "$SRC" 2>/dev/null || true' EXIT
if ! git -C "$SRC" apply "$PWD/scripts/upper-bound.patch"; then
  echo "upper-bound: scripts/upper-bound.patch no longer applies to HEAD; redo it against src/store/sled_store.rs" >&2
  exit 1
fi
CARGO_TARGET_DIR=$WORK/target cargo build --release --bin copanel --manifest-path "$SRC/Cargo.toml"
BIN=$WORK/copanel
cp "$WORK/target/release/copanel" "$BIN"
for mode in sled file none; do
  {
    echo '#!/bin/sh'
    [ "$mode" = sled ] || echo "export COPANEL_UPPER_BOUND=$mode"
    echo "exec \"$BIN\" \"\$@\""
  } >"$WORK/$mode"
  chmod +x "$WORK/$mode"
done
echo "upper-bound: A=sled B=file C=none D=bare, HEAD $(git rev-parse --short HEAD)"
CARGO_TARGET_DIR=$TARGET_DIR scripts/ab.sh "$WORK/sled" "$WORK/file" "$WORK/none" \
  "bare:$TARGET_DIR/release/examples/bare"
