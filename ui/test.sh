#!/usr/bin/env bash
# The dashboard's checks: the TypeScript type-checks, the checked-in ui/dist is what the sources
# build to (the Rust binary embeds it), then the browser tests (tests/dashboard.test.mjs) against
# the real server. Needs `cargo build -p fission` and environments/setup.sh done first.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

npm ci --no-audit --no-fund --loglevel=error
npm run build
if git rev-parse --git-dir >/dev/null 2>&1 && ! git diff --quiet -- dist; then
  echo "Error: ui/dist is stale; commit the output of 'npm run build' in ui/" >&2
  git --no-pager diff --stat -- dist >&2
  exit 1
fi
node --test --test-concurrency=1 tests/
