#!/usr/bin/env bash
# Run every fuzz target for the given number of seconds each (default 60), one after another.
#   scripts/fuzz.sh [seconds] [target...]
# Needs nightly Rust and cargo-fuzz (installed from crates.io if missing). The checked-in seeds
# in fuzz/corpus/<target> stay small: what libFuzzer finds goes to fuzz/target/corpus/<target>.
# A crash stops the run with the reproducer in fuzz/artifacts/<target>/ and exit status 1.
# Each target's last libFuzzer status line (executions, coverage) is printed at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"

seconds="${1:-60}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(route_match unpack spec_parse resource_decode)

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# The instrumented build is slow (minutes on 2 cores): keep it in a cache shared by every
# checkout; cargo's own fingerprints decide what to rebuild.
export CARGO_TARGET_DIR="${FISSION_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fission-rs/fuzz-target}"
mkdir -p "$CARGO_TARGET_DIR"

# Build once, then run the libFuzzer binaries directly (`cargo fuzz run` may rebuild).
cargo +nightly fuzz build -O
triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"

summary=()
for t in "${targets[@]}"; do
  work="target/corpus/$t"
  mkdir -p "$work" "corpus/$t" "artifacts/$t"
  log="target/fuzz-$t.log"
  echo "== fuzz $t for ${seconds}s"
  if ! "$CARGO_TARGET_DIR/$triple/release/$t" "$work" "corpus/$t" \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $t FAILED (reproducer in fuzz/artifacts/$t/, log $PWD/$log)" >&2
    exit 1
  fi
  last="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
  execs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)"
  summary+=("$t: ${execs:-?} executions in ${seconds}s; last status: ${last:-none}")
done
printf 'fuzz summary\n'
printf '  %s\n' "${summary[@]}"
