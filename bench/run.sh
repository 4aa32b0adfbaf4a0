#!/usr/bin/env bash
# Runs every benchmark on this machine and writes BENCHMARKS.md (see examples/bench/main.rs):
#   bench/run.sh            full run (about 10 minutes), rewrites BENCHMARKS.md
#   bench/run.sh --quick    smaller counts (about 2 minutes), also rewrites BENCHMARKS.md
#   bench/run.sh --quick --out - --only e2e,baseline     print some sections only
# It builds the daemon and the bench in the release profile first (BENCH_PROFILE=dev reuses the test
# build instead, as CI does to check that the bench still runs; dev figures are not representative).
# Needs Debian's mosquitto, python3-serial and python3-paho-mqtt (the baseline).
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${BENCH_PROFILE:-release}"
# Two builds: in one, the bench's dev-dependencies' features (tokio's `test-util`, whose clock takes a
# lock on every read) would be built into the daemon too; users' daemon is built alone.
cargo build --quiet --profile "$profile" --bin sensorgate
cargo build --quiet --profile "$profile" --example bench
case "$profile" in
  dev) dir=debug ;;
  *) dir="$profile" ;;
esac
exec "target/$dir/examples/bench" "$@"
