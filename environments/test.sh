#!/usr/bin/env bash
# Runs both runtime test suites (run setup.sh first).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PIP_PYTHON="${PIP_PYTHON:-python3}"

status=0
echo "== nodejs runtime tests"
(cd "$HERE/nodejs" && node --test test/*.test.js) || status=1
# The same contract once more with every call going through Express (no fast path).
echo "== nodejs runtime tests, FAST_PATH=0"
(cd "$HERE/nodejs" && FAST_PATH=0 node --test test/*.test.js) || status=1
echo "== python runtime tests"
(cd "$HERE" && "$PIP_PYTHON" -m pytest -q -p no:cacheprovider python/tests) || status=1
exit "$status"
