#!/usr/bin/env bash
# What the status page (the `http` feature: src/http/) adds to the stripped release daemon: builds the
# release binary with every default feature and again without `http`, one after the other in the same
# target directory, and prints both sizes and their difference (the budget is 150 KB).
#   bench/http-size.sh                                     this machine's target
#   bench/http-size.sh --target aarch64-unknown-linux-gnu  a Pi's (the linkers of .ci/cross.sh)
# Each build is a full LTO link of the daemon (minutes on 2 cores); the default build comes last, so
# target/.../release/sensorgate is the default daemon afterwards. The stripped copies are kept beside it
# as sensorgate.with-http and sensorgate.without-http. The release profile strips already; the copies are
# stripped again (a no-op then) so that CARGO_PROFILE_RELEASE_STRIP=false, which keeps the symbols for
# `nm --size-sort -C target/release/sensorgate`, measures the same thing.
set -euo pipefail
cd "$(dirname "$0")/.."
target_args=()
dir=target/release
strip=strip
if [ "${1:-}" = "--target" ]; then
  target_args=(--target "$2")
  dir="target/$2/release"
  strip="${STRIP:-${2%%-unknown-*}-linux-gnu-strip}" # aarch64-linux-gnu-strip (Debian: binutils-aarch64-linux-gnu)
  # Debian's cross linker for aarch64 as .ci/cross.sh sets it, unless one is set already (set
  # CARGO_TARGET_<TRIPLE>_LINKER and STRIP for other targets).
  linker_var="CARGO_TARGET_$(echo "$2" | tr 'a-z-' 'A-Z_')_LINKER"
  export "$linker_var=${!linker_var:-${2%%-unknown-*}-linux-gnu-gcc}"
fi
# Every default feature but `http` (Cargo.toml [features] default).
without="$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json, sys
features = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "sensorgate"][0]["features"]
print(",".join(f for f in features["default"] if f != "http"))')"
build() {
  cargo build --quiet --release "${target_args[@]}" --bin sensorgate "$@"
}
build --no-default-features --features "$without"
"$strip" -o "$dir/sensorgate.without-http" "$dir/sensorgate"
build
"$strip" -o "$dir/sensorgate.with-http" "$dir/sensorgate"
with_bytes=$(stat -c %s "$dir/sensorgate.with-http")
without_bytes=$(stat -c %s "$dir/sensorgate.without-http")
echo "stripped release, $dir:"
echo "  default features:           $with_bytes bytes"
echo "  without http ($without): $without_bytes bytes"
echo "  the status page adds:       $((with_bytes - without_bytes)) bytes (budget 150000)"
