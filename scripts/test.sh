#!/usr/bin/env bash
# The whole test suite: runtime dependencies, then every Rust test (unit, API contract,
# end-to-end through the real binaries), then the runtimes' own suites.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

./environments/setup.sh
cargo build --locked --workspace --all-targets
cargo test --locked --workspace -- --test-threads=2
./environments/test.sh
# The fuzz targets, 20 s each (scripts/fuzz.sh installs nightly and cargo-fuzz when missing;
# under CI=true that must work, elsewhere no nightly toolchain means the step is skipped).
ci=false
[[ -n "${CI:-}" && "${CI}" != "false" && "${CI}" != "0" ]] && ci=true
if $ci || rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  ./scripts/fuzz.sh 20
else
  echo "fuzz: SKIPPED (no nightly toolchain; CI installs one)"
fi
# The benchmark harness still runs (no thresholds: figures on a shared CI machine mean little).
cargo run --locked -p fission-bench -- --smoke > target/bench-smoke.md
echo "bench smoke: ok ($(grep -c '^|' target/bench-smoke.md) table rows)"
