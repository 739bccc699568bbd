#!/usr/bin/env bash
# Builds helm (v4, from the Go module proxy: helm-tools/ pins helm.sh/helm/v4/cmd/helm) into a
# cache directory keyed on helm-tools' go.mod/go.sum and the Go version, as build-binaries.sh
# does for the control plane: a cold build takes a few minutes, a hit costs milliseconds.
#
# Usage: scripts/k8s/build-helm.sh
#   Prints the bin directory (holding `helm`) on stdout as its last line.
#   FISSION_HELM_CACHE overrides the cache root (default ~/.cache/fission-rs/helm).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HV=v4.3.2

command -v go >/dev/null || { echo "Error: go is not installed (needed to build helm; scripts/k8s/ensure-go.sh fetches it)" >&2; exit 1; }

key=$( { cat "$HERE/helm-tools/go.mod" "$HERE/helm-tools/go.sum"; echo "$HV"; go env GOVERSION; } \
       | sha256sum | cut -c1-16)
root=${FISSION_HELM_CACHE:-$HOME/.cache/fission-rs/helm}
bin=$root/$key/bin

# Test binaries running in parallel may all ask at once: one builds, the others wait for it.
mkdir -p "$root"
exec 9>"$root/$key.lock"
flock 9

if [ -x "$bin/helm" ]; then
  echo "helm: cache hit in $bin" >&2
  echo "$bin"
  exit 0
fi

echo "helm: cache miss, building $HV into $bin" >&2
# Built into a temporary dir and renamed at the end: an interrupted build never looks like a hit.
tmp=$root/$key/bin.tmp.$$
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0 GOTOOLCHAIN=local
# Helm's Makefile stamps the version the same way; without it `helm version` says v4.3.
LD="-s -w -X helm.sh/helm/v4/internal/version.version=$HV -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
t0=$(date +%s)
(cd "$HERE/helm-tools" && go mod download && \
  nice -n 10 go build -trimpath -ldflags "$LD" -o "$tmp/helm" helm.sh/helm/v4/cmd/helm)
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "helm: built in $(( $(date +%s) - t0 )) s" >&2
echo "$bin"
