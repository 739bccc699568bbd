#!/usr/bin/env bash
# The whole test suite: runtime dependencies, then every Rust test (unit, API contract,
# end-to-end through the real binaries), then the runtimes' own suites.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

./environments/setup.sh
# The reference OpenMetrics parser, for the test that parses whole /metrics scrapes
# (crates/fission/tests/compat.rs); it fails under CI without it.
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  --target target/test-tools/python prometheus-client==0.21.1
cargo build --locked --workspace --all-targets
cargo test --locked --workspace -- --test-threads=2
./environments/test.sh
# The benchmark harness still runs (no thresholds: figures on a shared CI machine mean little).
cargo run --locked -p fission-bench -- --smoke > target/bench-smoke.md
echo "bench smoke: ok ($(grep -c '^|' target/bench-smoke.md) table rows)"
