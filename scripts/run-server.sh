#!/usr/bin/env bash
# One command from a fresh checkout to a running all-in-one server (controller on :31313,
# router on :31314, state in ~/.local/share/fission). Extra arguments go to `fission server`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/setup.sh"
exec "$ROOT/target/release/fission" server "$@"
