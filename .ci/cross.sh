#!/usr/bin/env bash
# Proves the Raspberry Pi targets without `cross` (which cannot pull its images in CI): builds sensorgate
# for aarch64 and armv7 with Debian's cross linkers, reports the stripped sizes, and runs each binary under
# qemu-user: `--version`, `check-config config/demo.toml`, and a short `run` of the demo config on a free
# port whose retained device state a client must read. Reports the emulator's peak RSS, then stops the
# daemon with SIGTERM and requires a clean exit.
#
# Environment:
#   CROSS_PROFILE   cargo profile (default ci-cross: unoptimised and stripped, to fit CI's time; use
#                   `release` for the binaries users get)
#   CROSS_TARGETS   space-separated targets (default: aarch64 and armv7)
#   CROSS_NO_SETUP  set to 1 to skip rustup/apt (toolchains already present)
#   CROSS_OUT       directory for the built binaries (default $CARGO_TARGET_DIR/cross-out)
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${CROSS_PROFILE:-ci-cross}"
read -r -a targets <<<"${CROSS_TARGETS:-aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf}"
out="${CROSS_OUT:-${CARGO_TARGET_DIR:-target}/cross-out}"
demo_config="config/demo.toml"

say() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=arm-linux-gnueabihf-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
export CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc
export AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar

# qemu binary and sysroot per target.
qemu_for() {
    case "$1" in
        aarch64-unknown-linux-gnu) echo "qemu-aarch64 -L /usr/aarch64-linux-gnu" ;;
        armv7-unknown-linux-gnueabihf) echo "qemu-arm -L /usr/arm-linux-gnueabihf" ;;
        *) fail "no qemu mapping for $1" ;;
    esac
}

setup() {
    say "toolchains"
    rustup target add "${targets[@]}"
    local packages=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross
        libc6-dev-armhf-cross qemu-user mosquitto-clients)
    local missing=()
    for package in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$package")
    done
    if ((${#missing[@]})); then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

build() {
    local target="$1" started elapsed binary
    say "build $target (profile $profile)"
    started=$(date +%s)
    cargo build --locked --profile "$profile" --target "$target" --bin sensorgate
    elapsed=$(($(date +%s) - started))
    binary="${CARGO_TARGET_DIR:-target}/$target/$profile/sensorgate"
    [[ -x "$binary" ]] || fail "$binary missing"
    mkdir -p "$out"
    cp "$binary" "$out/sensorgate-$target"
    printf 'built %s in %ss: %s bytes (%s)\n' "$target" "$elapsed" "$(stat -c %s "$binary")" \
        "$(file -b "$binary" | cut -d, -f1-2,5-)"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The demo config with its first listener on $1 and its state in $2.
smoke_config() {
    local port="$1" state="$2" file="$3"
    grep -q '^[[:space:]]*bind[[:space:]]*=' "$demo_config" || fail "$demo_config has no listener bind"
    sed -e "0,/^[[:space:]]*bind[[:space:]]*=.*/s||bind = \"127.0.0.1:$port\"|" \
        -e "s|^[[:space:]]*state_dir[[:space:]]*=.*|state_dir = \"$state\"|" \
        "$demo_config" >"$file"
}

daemon_pid=""
cleanup() {
    if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -KILL "$daemon_pid" 2>/dev/null || true
    fi
    if [[ -n "${work:-}" ]]; then rm -rf "$work"; fi
    return 0 # an EXIT trap's last status becomes the script's: never turn success into failure here
}
trap cleanup EXIT

smoke() {
    local target="$1" binary qemu base port config state sub status
    binary="$out/sensorgate-$target"
    read -r -a qemu <<<"$(qemu_for "$target")"
    say "qemu $target: --version"
    "${qemu[@]}" "$binary" --version
    say "qemu $target: check-config $demo_config"
    "${qemu[@]}" "$binary" check-config "$demo_config"

    say "qemu $target: run"
    work=$(mktemp -d)
    port=$(free_port)
    state="$work/state"
    mkdir -p "$state"
    config="$work/demo.toml"
    smoke_config "$port" "$state" "$config"
    # The demo's codec path is relative to the configuration file: its codecs go beside the copy.
    cp -r "$(dirname "$demo_config")/codecs" "$work/"
    base=$(sed -n 's/^[[:space:]]*base_topic[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$config" | head -n1)
    base="${base:-sensorgate}"
    # STATE_DIRECTORY as systemd would set it; the journal is not ours here, so logs go to stderr.
    STATE_DIRECTORY="$state" RUST_LOG=info "${qemu[@]}" "$binary" run -c "$config" \
        >"$work/daemon.log" 2>&1 &
    daemon_pid=$!

    # The retained state of a simulated device, as a late subscriber sees it. Connection refusals while
    # the emulated broker starts are retried, within 60 s in all.
    sub=""
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log"; fail "daemon exited early"; }
        if sub=$(mosquitto_sub -h 127.0.0.1 -p "$port" -t "$base/+" -C 1 -W 10 -v 2>/dev/null); then
            [[ -n "$sub" ]] && break
        fi
        sleep 1
    done
    [[ -n "$sub" ]] || { cat "$work/daemon.log"; fail "no retained device state on $base/+"; }
    printf 'retained: %s\n' "$sub"
    grep -q '"last_seen"' <<<"$sub" || fail "device state without last_seen: $sub"

    # qemu-user runs the guest in its own address space: this is the emulator's peak RSS (guest heap and
    # stacks, the translated code cache and qemu itself), an upper bound for the native figure.
    printf 'qemu %s RSS: %s, peak %s\n' "$target" \
        "$(awk '/^VmRSS/ {print $2 " " $3}' "/proc/$daemon_pid/status")" \
        "$(awk '/^VmHWM/ {print $2 " " $3}' "/proc/$daemon_pid/status")"

    kill -TERM "$daemon_pid"
    status=0
    local waited=0
    while kill -0 "$daemon_pid" 2>/dev/null && ((waited < 150)); do
        sleep 0.2
        waited=$((waited + 1))
    done
    kill -0 "$daemon_pid" 2>/dev/null && { cat "$work/daemon.log"; fail "daemon ignored SIGTERM for 30 s"; }
    wait "$daemon_pid" || status=$?
    daemon_pid=""
    ((status == 0)) || { cat "$work/daemon.log"; fail "daemon exited with $status after SIGTERM"; }
    say "qemu $target: clean stop"
    rm -rf "$work"
    work=""
}

[[ "${CROSS_NO_SETUP:-0}" == 1 ]] || setup
for target in "${targets[@]}"; do
    build "$target"
done
for target in "${targets[@]}"; do
    smoke "$target"
done
say "cross: ok"
