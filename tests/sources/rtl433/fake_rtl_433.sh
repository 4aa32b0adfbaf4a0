#!/bin/bash
# A fake rtl_433 for tests/sources/rtl433/mod.rs: ignores its arguments and behaves as $FAKE_RTL433_MODE says,
# keeping its run count in $FAKE_RTL433_DIR/runs and the pid of a child it starts (to check that the
# whole process group is killed) in $FAKE_RTL433_DIR/child.pid.
dir="${FAKE_RTL433_DIR:?}"
runs=$(( $(cat "$dir/runs" 2>/dev/null || echo 0) + 1 ))
echo "$runs" > "$dir/runs"
nexus() { # id temperature
  printf '{"time" : "1700000000.000001", "protocol" : 19, "model" : "Nexus-TH", "id" : %s, "channel" : 1, "battery_ok" : 1, "temperature_C" : %s, "humidity" : 55, "mod" : "ASK", "freq" : 433.920, "rssi" : -7.1, "snr" : 21.5, "noise" : -28.6}\n' "$1" "$2"
}
stats() { echo '{"time" : "@1.0s", "enabled" : 191, "since" : "2026-12-06T16:55:44", "frames" : {"count" : 0, "fsk" : 0, "events" : 0}, "stats" : []}'; }
hold() { sleep 1000 & echo $! > "$dir/child.pid"; wait; }
echo "rtl_433 version 22.11 (fake, mode ${FAKE_RTL433_MODE}, run $runs)" >&2
case "${FAKE_RTL433_MODE:?}" in
  silent) # readings with repeats, then nothing at all: a stall by silence
    nexus 91 21.5; nexus 91 21.5; nexus 91 21.5; nexus 92 18.0; stats
    hold ;;
  exit3) # rtl_433's own stall exit
    nexus 91 21.5; stats
    echo "Async read stalled, exiting!" >&2
    exit 3 ;;
  hang) # the stall message, then a hang (still printing statistics, so only the message tells)
    nexus 91 21.5; stats
    echo "Async read stalled, exiting!" >&2
    trap '' TERM
    sleep 1000 & echo $! > "$dir/child.pid"
    while true; do stats; sleep 0.3; done ;;
  nostick) # a reading on the first run, then no stick
    if [ "$runs" -eq 1 ]; then nexus 91 21.5; stats; sleep 0.5; fi
    echo "No supported devices found." >&2
    exit 2 ;;
  dvb)
    echo "Kernel driver is active, or device is claimed by second instance of librtlsdr." >&2
    echo "In the first case, please either detach or blacklist the kernel module" >&2
    echo "usb_claim_interface error -6" >&2
    exit 2 ;;
  garbage) # a 1 MB line, invalid UTF-8, not JSON, then a good reading and statistics
    head -c 1048576 /dev/zero | tr '\0' 'x'; echo
    printf '{"model":"\xff\xfe"}\n'
    echo 'Tuned to 433.920MHz.'
    nexus 91 21.5
    while true; do stats; sleep 0.5; done ;;
  flood) # 20,000 senders as fast as the pipe takes them, then statistics
    for i in $(seq 1 20000); do nexus "$i" 20.0; done
    nexus 91 21.5
    while true; do stats; sleep 0.5; done ;;
  swap) # a tower sensor before and after a battery swap (new id), and a remote's button
    tower() { printf '{"time" : "1700000000.000001", "protocol" : 40, "model" : "Acurite-Tower", "id" : %s, "channel" : "A", "battery_ok" : 1, "temperature_C" : %s, "humidity" : 40, "mic" : "CHECKSUM", "rssi" : -12.0, "snr" : 15.0, "noise" : -27.0}\n' "$1" "$2"; }
    tower 1234 3.5; stats; sleep 0.3
    tower 877 4.0
    echo '{"time" : "1700000000.000002", "protocol" : 30, "model" : "Generic-Remote", "id" : 1234, "cmd" : 42, "tristate" : "00Z01Z0X0XXX"}'
    while true; do stats; sleep 0.3; done ;;
  *) echo "unknown mode" >&2; exit 64 ;;
esac
