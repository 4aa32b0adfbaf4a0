#!/usr/bin/env bash
# The broker's instructions per published message for two daemon builds, counted by valgrind's
# callgrind: an A/B of a change too small for CPU time to show on a shared, noisy machine (two runs
# of one build differ by about 0.5 %, where `bench/cpu-per-message.sh` medians differ by 10 %).
#   bench/instructions-per-message.sh BIN_A BIN_B [ROUNDS]     (ROUNDS: 1 by default)
# A build named `mosquitto` is Debian's /usr/sbin/mosquitto, for the same counts of the peer.
# Three cases per build, as in cpu-per-message.sh but fewer messages (callgrind runs the daemon about
# fifty times slower): 5,000 64-byte QoS 0 messages from one mosquitto_pub to one mosquitto_sub, 3,000
# at QoS 1, and 500 at QoS 1 to ten subscribers. The daemon runs under `valgrind --tool=callgrind`
# (one plain listener on 127.0.0.1:18851, a fresh state directory); its counts are zeroed once the
# subscribers are connected and dumped once they have every message (`callgrind_control`), so start-up
# is not counted. Printed: user-space instructions per published message (Debian: valgrind,
# mosquitto-clients). Counts only user space: a change that moves work into or out of the kernel
# (system calls) needs cpu-per-message.sh. Under callgrind the threads take turns on one CPU and a
# packet is mostly read alone, so the counts are those of a broker that is not saturated.
# The dumps stay in the printed directory for `callgrind_annotate` (a build with symbols, e.g. the
# `profiling` profile of docs/broker-performance.md, names the functions). Ends only what it started.
set -euo pipefail
# shellcheck source=bench/per-message.sh
source "$(dirname "$0")/per-message.sh"
[ $# -ge 2 ] || { sed -n '2,6p' "$0"; exit 2; }
a=$1 b=$2 rounds=${3:-1}
port=18851
work=$(mktemp -d)

# instructions_per_message BIN QOS SUBSCRIBERS COUNT
instructions_per_message() {
  local bin=$1 qos=$2 count=$4 run
  run=$(mktemp -d "$work/run.XXXX")
  local command
  if [ "$bin" = mosquitto ]; then
    # Debian's broker as the peer, as the bench runs it; as its own user, so that callgrind_control
    # can reach it (started as root it would switch to the mosquitto user).
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nuser %s\n' \
      "$port" "$(id -un)" >"$run/mosquitto.conf"
    command=(/usr/sbin/mosquitto -c "$run/mosquitto.conf")
  else
    command=("$bin" run -c "$(daemon_config "$run" "$port")")
  fi
  valgrind --tool=callgrind --callgrind-out-file="$run/callgrind.%p" "${command[@]}" >"$run/log" 2>&1 &
  local daemon=$!
  wait_for_listener "$port" 600
  write_lines "$run/lines" "$count"
  start_subscribers "$port" "$qos" "$3" "$count" 600
  sleep 2 # the subscriptions are in place
  callgrind_control --zero "$daemon" >/dev/null 2>&1
  publish_lines "$port" "$qos" "$run/lines"
  wait_for_subscribers
  callgrind_control --dump "$daemon" >/dev/null 2>&1
  kill "$daemon"
  wait "$daemon" 2>/dev/null || true
  # The dump after zeroing is part 1 of the daemon's profile.
  awk -v n="$count" '/^summary:/ { printf "%.0f", $2 / n }' "$run"/callgrind.*.1
}

echo "build | QoS 0, 1 -> 1 | QoS 1, 1 -> 1 | QoS 1, 1 -> 10 (instructions per published message; dumps in $work)"
for round in $(seq "$rounds"); do
  for bin in "$a" "$b"; do
    echo "$bin | $(instructions_per_message "$bin" 0 1 5000) | $(instructions_per_message "$bin" 1 1 3000) | $(instructions_per_message "$bin" 1 10 500)"
  done
done
