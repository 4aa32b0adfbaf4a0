#!/usr/bin/env bash
# Verifies the systemd unit and builds the Debian package for the Pi (aarch64), then checks what the
# package holds: the binary, the unit, the packaged config as a conffile and the reference beside it, and
# maintainer scripts that create the service account and enable the unit.
#
# Then the package for this machine's own architecture, as a user meets it: `apt-get install ./x.deb`,
# the daemon started as the service user with the packaged configuration (by systemd where it runs,
# otherwise `runuser -u sensorgate -- sensorgate run`), a reading received over MQTT on 127.0.0.1:1883,
# the daemon stopped by its PID and the package purged. Its binary is the debug build the tests made
# (scripts/test), so this step builds nothing when run after them.
#
# Run after .ci/cross.sh, which leaves $CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/$DEB_PROFILE/sensorgate;
# builds it otherwise.
#
# Environment:
#   DEB_PROFILE   cargo profile of the packaged binary (default ci-cross; `release` for what users get)
#   DEB_OUT       output directory for the .deb (default $CARGO_TARGET_DIR/debian)
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
profile="${DEB_PROFILE:-ci-cross}"
out="${DEB_OUT:-${CARGO_TARGET_DIR:-target}/debian}"
unit=systemd/sensorgate.service
binary="${CARGO_TARGET_DIR:-target}/$target/$profile/sensorgate"

say() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar

work=$(mktemp -d)
# What the native install step started, so that a failure leaves no daemon running and no package behind.
native_pid=""
native_installed=""
cleanup() {
    if [[ -n "$native_pid" ]]; then kill -TERM "$native_pid" 2>/dev/null || true; wait "$native_pid" || true; fi
    if [[ -n "$native_installed" ]]; then apt-get purge -y -q sensorgate >/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

# systemd-analyze verify needs ExecStart's binary to exist, and only warns (exit 0) about unknown keys:
# verify a copy whose ExecStart points at a binary present here, and fail on any output at all.
verify_unit() {
    say "systemd-analyze verify $unit"
    local stub="$work/sensorgate" copy="$work/sensorgate.service" report
    if [[ -x "$binary" ]]; then
        cp "$binary" "$stub"
    else
        ln -s /bin/true "$stub"
    fi
    sed "s|/usr/bin/sensorgate|$stub|g" "$unit" >"$copy"
    report=$(systemd-analyze verify "$copy" 2>&1) || { echo "$report"; fail "unit does not verify"; }
    # Lines about the host (no systemd as PID 1 in a container) are not about the unit.
    report=$(grep -v -e 'System has not been booted with systemd' -e 'Failed to connect to bus' <<<"$report" || true)
    [[ -z "$report" ]] || { echo "$report"; fail "systemd-analyze verify complained"; }
    grep -q '^Type=notify$' "$unit" || fail "unit is not Type=notify"
    grep -q '^WatchdogSec=' "$unit" || fail "unit has no WatchdogSec="
    echo "unit verifies"
}

install_cargo_deb() {
    if ! command -v cargo-deb >/dev/null; then
        say "cargo install cargo-deb"
        local started=$SECONDS
        # Unoptimised and without the xz (C) backend: packaging needs neither, and it halves CI's time here.
        cargo install cargo-deb --locked --debug --no-default-features --features gzip
        echo "cargo-deb installed in $((SECONDS - started))s"
    fi
    cargo deb --version
}

build_deb() {
    if [[ ! -x "$binary" ]]; then
        say "build $target ($profile)"
        rustup target add "$target"
        cargo build --locked --profile "$profile" --target "$target" --bin sensorgate
    fi
    say "cargo deb --target $target --profile $profile"
    mkdir -p "$out"
    cargo deb --target "$target" --profile "$profile" --no-build --no-strip --compress-type gzip --output "$out"
}

check_deb() {
    local deb contents info
    deb=$(ls -t "$out"/sensorgate_*_arm64.deb | head -n1)
    [[ -f "$deb" ]] || fail "no arm64 .deb in $out"
    say "check $deb ($(stat -c %s "$deb") bytes)"
    contents=$(dpkg-deb -c "$deb")
    echo "$contents"
    grep -Eq ' \./usr/bin/sensorgate$' <<<"$contents" || fail "binary missing"
    grep -Eq ' \./(usr/)?lib/systemd/system/sensorgate\.service$' <<<"$contents" || fail "unit missing"
    grep -Eq ' \./etc/sensorgate/sensorgate\.toml$' <<<"$contents" || fail "config missing"
    grep -Eq ' \./usr/share/doc/sensorgate/sensorgate\.toml$' <<<"$contents" || fail "reference missing"

    info=$(dpkg-deb -I "$deb")
    grep -q '^ Architecture: arm64$' <<<"$info" || fail "not an arm64 package"
    dpkg-deb -e "$deb" "$work/control"
    grep -qx '/etc/sensorgate/sensorgate.toml' "$work/control/conffiles" || fail "config is not a conffile"
    grep -q 'adduser --quiet --system' "$work/control/postinst" || fail "postinst creates no user"
    grep -q 'deb-systemd-helper' "$work/control/postinst" || fail "postinst does not enable the unit"

    # The packaged binary is the aarch64 build and the packaged unit is the one verified above.
    dpkg-deb -x "$deb" "$work/root"
    file -b "$work/root/usr/bin/sensorgate" | grep -q 'ARM aarch64' || fail "packaged binary is not aarch64"
    cmp -s "$unit" "$(ls "$work"/root/{usr/,}lib/systemd/system/sensorgate.service 2>/dev/null | head -n1)" ||
        fail "packaged unit differs from $unit"
    cmp -s config/packaged.toml "$work/root/etc/sensorgate/sensorgate.toml" ||
        fail "/etc/sensorgate/sensorgate.toml is not config/packaged.toml"
    cmp -s config/sensorgate.toml "$work/root/usr/share/doc/sensorgate/sensorgate.toml" ||
        fail "the reference is not config/sensorgate.toml"
    echo "package ok"
}

# The package for this machine's architecture, from the debug binary the tests built: a target directory
# of its own holds it where the manifest's assets expect a release build, so nothing is compiled again
# and the real target directory's release build is left alone.
build_native_deb() {
    local built="${CARGO_TARGET_DIR:-target}/debug/sensorgate" native="$work/native-target"
    if [[ ! -x "$built" ]]; then
        say "build the host binary (dev profile)"
        cargo build --locked --bin sensorgate
    fi
    mkdir -p "$native/release"
    if command -v strip >/dev/null; then
        strip -o "$native/release/sensorgate" "$built"
    else
        cp "$built" "$native/release/sensorgate"
    fi
    say "cargo deb for $(dpkg --print-architecture) (the tests' debug build)"
    # The system's gzip: a debug-built cargo-deb takes minutes to compress a debug binary itself.
    CARGO_TARGET_DIR="$native" cargo deb --no-build --no-strip --compress-type gzip --compress-system --fast \
        --output "$work/native"
}

# Waits (at most 30 s) for one message under sensorgate/ on 127.0.0.1:1883; prints it.
mqtt_reading() {
    local deadline=$((SECONDS + 30)) message
    while ((SECONDS < deadline)); do
        if message=$(mosquitto_sub -h 127.0.0.1 -p 1883 -t 'sensorgate/#' -v -C 1 -W 5 2>/dev/null); then
            echo "$message"
            return 0
        fi
        sleep 1
    done
    return 1
}

install_and_run_native_deb() {
    local arch deb started=$SECONDS
    arch=$(dpkg --print-architecture)
    deb=$(ls -t "$work"/native/sensorgate_*_"$arch".deb | head -n1)
    [[ -f "$deb" ]] || fail "no $arch .deb in $work/native"
    say "apt-get install $deb"
    dpkg -s sensorgate >/dev/null 2>&1 && fail "sensorgate is installed already; not touching it"
    native_installed=1
    apt-get install -y -q "$deb"
    sensorgate check-config /etc/sensorgate/sensorgate.toml || fail "check-config refuses the packaged file"
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        say "systemd runs: the package started sensorgate.service"
        systemctl is-active --quiet sensorgate || { systemctl status sensorgate --no-pager || true; fail "not active"; }
    else
        say "no systemd: runuser -u sensorgate -- sensorgate run -c /etc/sensorgate/sensorgate.toml"
        runuser -u sensorgate -- sensorgate run -c /etc/sensorgate/sensorgate.toml >"$work/run.log" 2>&1 &
        native_pid=$!
    fi
    local reading
    reading=$(mqtt_reading) || { [[ -z "$native_pid" ]] || cat "$work/run.log"; fail "no MQTT message on 127.0.0.1:1883"; }
    echo "served: $reading"
    if [[ -n "$native_pid" ]]; then
        # SIGTERM to the daemon itself (runuser's child): runuser then exits with the daemon's status (a
        # SIGTERM to runuser would be passed on, but runuser would report the signal, not the daemon).
        local daemon
        daemon=$(ps -o pid= --ppid "$native_pid" | tr -d ' ')
        [[ -n "$daemon" ]] || fail "runuser $native_pid has no child"
        kill -TERM "$daemon"
        local pid=$native_pid
        native_pid=""
        wait "$pid" || { cat "$work/run.log"; fail "sensorgate exited with $? on SIGTERM"; }
        grep -q 'SIGTERM: stopping' "$work/run.log" || { cat "$work/run.log"; fail "no clean stop logged"; }
    fi
    say "apt-get purge sensorgate"
    native_installed=""
    apt-get purge -y -q sensorgate
    [[ ! -e /usr/bin/sensorgate && ! -e /etc/sensorgate && ! -e /var/lib/sensorgate ]] ||
        fail "purge left files behind"
    echo "installed, served MQTT and purged in $((SECONDS - started))s"
}

for tool in systemd-analyze:systemd file:file dpkg-deb:dpkg mosquitto_sub:mosquitto-clients runuser:util-linux; do
    command -v "${tool%%:*}" >/dev/null ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${tool#*:}"; }
done
verify_unit
install_cargo_deb
build_deb
check_deb
build_native_deb
install_and_run_native_deb
