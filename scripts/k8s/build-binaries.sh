#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries the kube tests need (etcd,
# kube-apiserver, kubectl) from the Go module proxy, into a cache directory
# keyed on the tools modules' go.mod/go.sum and the Go version, so a second run
# is a cache hit that costs seconds.
#
# Usage: scripts/k8s/build-binaries.sh
#   Prints the bin directory on stdout as its last line.
#   FISSION_K8S_CACHE overrides the cache root (default ~/.cache/fission-rs/k8s).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KV=v1.37.2

command -v go >/dev/null || { echo "Error: go is not installed (needed to build the Kubernetes control plane)" >&2; exit 1; }

# The key covers everything that changes the binaries: both modules, the
# Kubernetes version stamp, and the Go toolchain.
key=$( { cat "$HERE/k8s-tools/go.mod" "$HERE/k8s-tools/go.sum" \
             "$HERE/etcd-tools/go.mod" "$HERE/etcd-tools/go.sum"; \
         echo "$KV"; go env GOVERSION; } | sha256sum | cut -c1-16)
root=${FISSION_K8S_CACHE:-$HOME/.cache/fission-rs/k8s}
bin=$root/$key/bin

# Test binaries running in parallel may all ask at once: one builds, the others wait for it.
mkdir -p "$root"
exec 9>"$root/$key.lock"
flock 9

if [ -x "$bin/etcd" ] && [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kubectl" ]; then
  echo "k8s binaries: cache hit in $bin" >&2
  echo "$bin"
  exit 0
fi

echo "k8s binaries: cache miss, building into $bin (about 10 minutes cold)" >&2
# Build into a temporary dir and rename at the end, so an interrupted build
# never leaves a half-filled bin dir that looks like a cache hit.
tmp=$root/$key/bin.tmp.$$
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

export CGO_ENABLED=0 GOTOOLCHAIN=local

# Version stamp as Kubernetes' hack/lib/version.sh does it; without it the
# server reports v0.0.0-master.
LD="-s -w"
for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  LD="$LD -X $p.gitVersion=$KV -X $p.gitMajor=1 -X $p.gitMinor=37 -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

(cd "$HERE/k8s-tools" && go mod download && \
  nice -n 10 go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags "$LD" -o "$tmp/" tool)
# The package path ends in /v3, so the output is named explicitly.
(cd "$HERE/etcd-tools" && go mod download && \
  nice -n 10 go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" tool)

rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "$bin"
