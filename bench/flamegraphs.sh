#!/usr/bin/env bash
# Flame graphs of the broker bench's cases: where the daemon's CPU goes in each, as the bench measures it.
#   bench/flamegraphs.sh [OUT_DIR [TAG ...]]     (OUT_DIR: target/flamegraphs; TAG: every case)
# Builds the daemon and the bench with symbols (the `profiling` profile of docs/broker-performance.md:
# the release profile's optimisation, LTO and codegen units, line tables kept), then runs the bench's
# broker section once per case (`--only broker --case TAG`, the full counts) with `perf record -g
# --call-graph dwarf` on the daemon for the whole run (Debian: linux-perf; `cargo install inferno` for
# inferno-collapse-perf and inferno-flamegraph). Writes, per case, OUT_DIR/TAG.svg (open it in a
# browser) and OUT_DIR/TAG.folded, then prints the table of bench/profile-shares.py over all of them.
# The bench also measures mosquitto beside each case; only the daemon is profiled. Root, or
# kernel.perf_event_paranoid <= 1, for the kernel's share. Ends only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/flamegraphs}
shift || true
for tool in perf inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || {
    echo "flamegraphs: $tool is missing (Debian: linux-perf; cargo install inferno)" >&2
    exit 2
  }
done
mkdir -p "$out"
# The daemon alone, as users build it (with the bench in the same build it would get the
# dev-dependencies' features, such as tokio's `test-util` clock), then the bench.
for target in "--bin sensorgate" "--example bench"; do
  # shellcheck disable=SC2086 # two words each
  cargo build --quiet --profile profiling $target \
    --config 'profile.profiling.inherits="release"' \
    --config 'profile.profiling.strip="none"' \
    --config 'profile.profiling.debug="line-tables-only"'
done
daemon_bin=$PWD/target/profiling/sensorgate
bench_bin=$PWD/target/profiling/examples/bench
if [ $# -gt 0 ]; then tags=("$@"); else mapfile -t tags < <("$bench_bin" --list-cases); fi

for tag in "${tags[@]}"; do
  echo "flamegraphs: $tag" >&2
  SENSORGATE_BIN=$daemon_bin "$bench_bin" --only broker --case "$tag" --out - \
    >"$out/$tag.bench.md" 2>"$out/$tag.bench.log" &
  bench=$!
  daemon=
  for _ in $(seq 200); do # the bench starts its daemon within a few seconds
    daemon=$(pgrep -P "$bench" -x sensorgate || true)
    [ -n "$daemon" ] && break
    sleep 0.05
  done
  if [ -z "$daemon" ]; then
    wait "$bench" || true
    echo "flamegraphs: the bench started no daemon for $tag (see $out/$tag.bench.log)" >&2
    exit 1
  fi
  # Ends by itself when the bench stops the daemon.
  perf record --quiet -F 1999 -g --call-graph dwarf,16384 -p "$daemon" -o "$out/$tag.perf.data" \
    >/dev/null 2>&1 &
  recorder=$!
  wait "$bench"
  wait "$recorder" || true
  perf script -i "$out/$tag.perf.data" 2>/dev/null | inferno-collapse-perf --kernel >"$out/$tag.folded"
  inferno-flamegraph --title "sensorgate, bench case $tag" <"$out/$tag.folded" >"$out/$tag.svg"
  rm -f "$out/$tag.perf.data"
done
folded=()
for tag in "${tags[@]}"; do folded+=("$out/$tag.folded"); done
python3 bench/profile-shares.py "${folded[@]}"
