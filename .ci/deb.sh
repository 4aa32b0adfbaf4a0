#!/usr/bin/env bash
# Verifies the systemd unit and builds the Debian package for the Pi (aarch64), then checks what the
# package holds: the binary, the unit, the example config as a conffile, and maintainer scripts that create
# the service account and enable the unit.
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
trap 'rm -rf "$work"' EXIT

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
    echo "package ok"
}

for tool in systemd-analyze:systemd file:file dpkg-deb:dpkg; do
    command -v "${tool%%:*}" >/dev/null ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${tool#*:}"; }
done
verify_unit
install_cargo_deb
build_deb
check_deb
