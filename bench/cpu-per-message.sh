#!/usr/bin/env bash
# The broker's CPU per published message for two daemon builds, interleaved: an A/B of an engine or
# host change that is too small for the bench's throughput rows to show on a shared machine.
#   bench/cpu-per-message.sh BIN_A BIN_B [ROUNDS]     (ROUNDS: 3 by default)
# For each round and each binary, three cases: 30,000 64-byte QoS 1 messages from one mosquitto_pub to
# one mosquitto_sub, 50,000 at QoS 0, and 10,000 at QoS 1 to ten subscribers. Each case starts the
# daemon (one plain listener on 127.0.0.1:18841, `[log] level = "warn"`, a fresh state directory), and
# counts its task-clock with `perf stat -p` while the messages pass (Debian: linux-perf,
# mosquitto-clients). Printed: microseconds of CPU per published message (with ten subscribers, ten
# deliveries each); compare the medians. Ends only the processes it started.
set -euo pipefail
# shellcheck source=bench/per-message.sh
source "$(dirname "$0")/per-message.sh"
[ $# -ge 2 ] || { sed -n '2,4p' "$0"; exit 2; }
a=$1 b=$2 rounds=${3:-3}
port=18841
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# cpu_per_message BIN QOS SUBSCRIBERS COUNT
cpu_per_message() {
  local bin=$1 qos=$2 count=$4 run
  run=$(mktemp -d "$work/run.XXXX")
  "$bin" run -c "$(daemon_config "$run" "$port")" >"$run/log" 2>&1 &
  local daemon=$!
  wait_for_listener "$port" 100
  write_lines "$run/lines" "$count"
  start_subscribers "$port" "$qos" "$3" "$count" 120
  sleep 0.5 # the subscriptions are in place
  perf stat -e task-clock -x, -p "$daemon" -o "$run/stat" &
  local stat=$!
  sleep 0.2
  publish_lines "$port" "$qos" "$run/lines"
  wait_for_subscribers
  kill -INT "$stat"
  wait "$stat" || true
  kill "$daemon"
  wait "$daemon" 2>/dev/null || true
  awk -F, -v n="$count" '/task-clock/ { printf "%.2f", $1 * 1000 / n }' "$run/stat"
}

echo "build | QoS 1, 1 -> 1 | QoS 0, 1 -> 1 | QoS 1, 1 -> 10 (µs CPU per published message)"
for round in $(seq "$rounds"); do
  for bin in "$a" "$b"; do
    echo "$bin | $(cpu_per_message "$bin" 1 1 30000) | $(cpu_per_message "$bin" 0 1 50000) | $(cpu_per_message "$bin" 1 10 10000)"
  done
done
