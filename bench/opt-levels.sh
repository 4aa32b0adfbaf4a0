#!/usr/bin/env bash
# The release profile's opt-level, measured per candidate (docs/pi.md, "Optimisation level"):
#   bench/opt-levels.sh [ROUNDS]     (default 3 rounds; about 5 minutes per candidate build)
# Builds the daemon once per candidate into its own target directory (target/opt-levels, or
# $OPT_LEVELS_TARGET: the
# dependencies are shared between candidates, only what a candidate changes is rebuilt), prints each
# binary's stripped size, then runs the bench's broker and e2e sections (--quick) with each binary in
# turn, ROUNDS times interleaved (the machine's noise falls on every candidate alike), and prints per
# row the median CPU µs per message and the median ratio to mosquitto's throughput measured in the same
# run. Candidates:
#   z        the shipped profile (opt-level "z" everywhere, fat LTO)
#   engine3  opt-level 3 for the broker engine (rmqtt, rmqtt-codec, rmqtt-net, rmqtt-utils), tokio and
#            bytes before LTO; the LTO pass itself runs at the binary's "z"
#   all3     the binary itself at 3 too (so the LTO pass optimises the whole program at 3)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
target="${OPT_LEVELS_TARGET:-${CARGO_TARGET_DIR:-target}/opt-levels}"
out="$target/results"
mkdir -p "$out"
engine=()
for package in rmqtt rmqtt-codec rmqtt-net rmqtt-utils tokio bytes; do
  engine+=(--config "profile.release.package.$package.opt-level=3")
done
declare -A flags=(
  [z]=""
  [engine3]="${engine[*]}"
  [all3]="${engine[*]} --config profile.release.package.sensorgate.opt-level=3"
)
candidates=(z engine3 all3)
cargo build --quiet --release --target-dir "$target" --example bench
for candidate in "${candidates[@]}"; do
  # shellcheck disable=SC2086 # the flags are words
  cargo build --quiet --release --target-dir "$target" --bin sensorgate ${flags[$candidate]}
  mkdir -p "$out/$candidate"
  cp "$target/release/sensorgate" "$out/$candidate/sensorgate"
  printf '%-8s stripped x86_64 release: %s bytes\n' "$candidate" "$(stat -c %s "$out/$candidate/sensorgate")"
done
for round in $(seq 1 "$rounds"); do
  for candidate in "${candidates[@]}"; do
    SENSORGATE_BIN="$out/$candidate/sensorgate" "$target/release/examples/bench" --quick \
      --only broker,e2e --out "$out/$candidate/round-$round.md" >"$out/$candidate/round-$round.log" 2>&1
    echo "round $round: $candidate done"
  done
done
python3 bench/opt-levels-summary.py "$out" "${candidates[@]}"
