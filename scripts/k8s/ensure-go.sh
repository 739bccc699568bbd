#!/usr/bin/env bash
# Prints a directory holding a `go` binary, fetching the Go toolchain when none is installed.
# The toolchain is published on the Go module proxy as golang.org/toolchain, so this needs
# nothing but the proxy; it is cached in ~/.cache/fission-rs/go/<version>.
set -euo pipefail
GO_VERSION=${GO_VERSION:-1.26.8}

if command -v go >/dev/null; then
  dirname "$(command -v go)"
  exit 0
fi
dir=$HOME/.cache/fission-rs/go/$GO_VERSION
if [ ! -x "$dir/bin/go" ]; then
  echo "fetching Go $GO_VERSION from the module proxy" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mod="v0.0.1-go$GO_VERSION.linux-amd64"
  curl -fsSL -o "$tmp/go.zip" "${GOPROXY_URL:-https://proxy.golang.org}/golang.org/toolchain/@v/$mod.zip"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$tmp/go.zip" "$tmp/x"
  # zip extraction drops the executable bits.
  chmod +x "$tmp/x/golang.org/toolchain@$mod"/bin/* "$tmp/x/golang.org/toolchain@$mod"/pkg/tool/*/*
  mkdir -p "$(dirname "$dir")"
  rm -rf "$dir"
  mv "$tmp/x/golang.org/toolchain@$mod" "$dir"
fi
echo "$dir/bin"
