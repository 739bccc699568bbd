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
