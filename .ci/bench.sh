#!/usr/bin/env bash
# CI: the quick benchmark, so it does not rot. It reuses the test build (dev profile, unoptimised: the
# figures mean nothing here and budgets are not enforced); it must run every section to the end and
# write a report with all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=/tmp/sensorgate-benchmarks-quick.md
start=$SECONDS
BENCH_PROFILE=dev bash bench/run.sh --quick --out "$out" >/dev/null
echo "quick bench: $((SECONDS - start)) s"
missing=0
for heading in "## Budgets" "## Physical limits" "## Decoders" "## Embedded broker" "## Spool" \
  "## End to end" "## The same workload through the baseline" "## Resources" "## Flash writes" \
  "## Security" "## Broker memory" "## Spool group commits by size" \
  "## Binary sizes"; do
  if ! grep -q "^$heading" "$out"; then
    echo "quick bench: the report has no section \"$heading\"" >&2
    missing=1
  fi
done
if grep -q "^Not run:" "$out"; then
  grep "^Not run:" "$out" >&2
  missing=1
fi
sed -n '/^## Budgets/,/^## Physical/p' "$out"
exit "$missing"
