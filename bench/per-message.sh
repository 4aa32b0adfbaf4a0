# The parts of one broker case that bench/cpu-per-message.sh and bench/instructions-per-message.sh
# share (sourced by them, not run): the daemon's configuration, the wait for its listener, the
# subscribers and the publisher. A case is COUNT 64-byte lines published by one `mosquitto_pub -l` on
# `load/x` to N `mosquitto_sub` on 127.0.0.1:PORT (Debian: mosquitto-clients).

# daemon_config DIR PORT: writes DIR/sensorgate.toml (one plain listener on PORT, `[log] level =
# "warn"`, a fresh state directory in DIR) and prints its path.
daemon_config() {
  printf '[gateway]\nstate_dir = "%s/state"\n[log]\nlevel = "warn"\n[[broker.listener]]\nbind = "127.0.0.1:%s"\n' \
    "$1" "$2" >"$1/sensorgate.toml"
  echo "$1/sensorgate.toml"
}

# wait_for_listener PORT TRIES: until 127.0.0.1:PORT accepts a connection, TRIES times 0.1 s at most.
wait_for_listener() {
  for _ in $(seq "$2"); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# start_subscribers PORT QOS N COUNT SECONDS: N subscribers on `load/x` at QOS, each ending after COUNT
# messages (or SECONDS); their PIDs in the array `subscribers`.
start_subscribers() {
  subscribers=()
  for _ in $(seq "$3"); do
    timeout "$5" mosquitto_sub -h 127.0.0.1 -p "$1" -q "$2" -t load/x -C "$4" >/dev/null &
    subscribers+=($!)
  done
}

# write_lines FILE COUNT: COUNT lines of 64 bytes, the payloads.
write_lines() {
  python3 -c "import sys; sys.stdout.write(('x' * 64 + '\n') * $2)" >"$1"
}

# publish_lines PORT QOS FILE: each line of FILE as one PUBLISH on `load/x` at QOS.
publish_lines() {
  mosquitto_pub -h 127.0.0.1 -p "$1" -q "$2" -t load/x -l <"$3"
}

# wait_for_subscribers: until every subscriber of start_subscribers has ended.
wait_for_subscribers() {
  for subscriber in "${subscribers[@]}"; do wait "$subscriber"; done
}
