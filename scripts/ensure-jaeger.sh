#!/usr/bin/env bash
# Prints the path of a Jaeger all-in-one binary (the tracing tests' OTLP receiver and query API),
# building it from the Go module proxy when it is not cached in ~/.cache/fission-rs/jaeger/<version>.
set -euo pipefail
JAEGER_VERSION=${JAEGER_VERSION:-v1.75.0}
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

bin=$HOME/.cache/fission-rs/jaeger/$JAEGER_VERSION/jaeger
if [ ! -x "$bin" ]; then
  gobin="$("$HERE/k8s/ensure-go.sh")"
  echo "building Jaeger $JAEGER_VERSION from the Go module proxy (a few minutes, once)" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cd "$tmp"
  "$gobin/go" mod init fission-rs/jaeger-build >/dev/null 2>&1
  "$gobin/go" get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION" >&2
  mkdir -p "$(dirname "$bin")"
  CGO_ENABLED=0 "$gobin/go" build -trimpath -o "$tmp/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger >&2
  mv "$tmp/jaeger" "$bin"
fi
echo "$bin"
