#!/usr/bin/env bash
# Prepares a fresh checkout: the runtimes' pinned dependencies and a release build of `fission`,
# linked into ~/.cargo/bin (on PATH wherever Rust is installed). Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

for tool in cargo node npm; do
  command -v "$tool" >/dev/null || { echo "setup: '$tool' is required but not installed" >&2; exit 1; }
done
[[ -x /usr/bin/python3 ]] || command -v python3 >/dev/null || { echo "setup: python3 is required" >&2; exit 1; }

# The sandbox every function instance runs in needs bubblewrap, nftables and iproute2.
sandbox_pkgs=()
command -v bwrap >/dev/null || sandbox_pkgs+=(bubblewrap)
command -v nft >/dev/null || sandbox_pkgs+=(nftables)
command -v ip >/dev/null || sandbox_pkgs+=(iproute2)
if ((${#sandbox_pkgs[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "setup: installing ${sandbox_pkgs[*]} for the function sandbox"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${sandbox_pkgs[@]}"
  else
    echo "setup: the function sandbox needs ${sandbox_pkgs[*]} (and root); without them start the server with --sandbox none" >&2
  fi
fi

./environments/setup.sh
cargo build --release --locked -p fission

if [[ -d "$HOME/.cargo/bin" ]]; then
  ln -sf "$ROOT/target/release/fission" "$HOME/.cargo/bin/fission"
  echo "setup: 'fission' is linked into ~/.cargo/bin"
else
  echo "setup: add $ROOT/target/release to your PATH to use 'fission'"
fi
