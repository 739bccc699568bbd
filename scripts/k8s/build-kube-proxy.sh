#!/usr/bin/env bash
# Builds kube-proxy (k8s.io/kubernetes/cmd/kube-proxy v1.37.2 from the Go module proxy; module
# in proxy-tools/, the same kubernetes version and replaces as node-tools/) for the test node,
# so ClusterIP and NodePort Services work there (node-cluster.sh runs it in nftables mode).
# Its own cache key and directory (~/.cache/fission-rs/k8s-proxy/<hash>, keyed on
# proxy-tools' go.mod/go.sum and the Go version), so the node binaries' cache stays valid.
# Cold: about a minute when the kubelet's build cache is warm, a few minutes otherwise; a hit
# costs milliseconds.
#
# Usage: scripts/k8s/build-kube-proxy.sh   -> prints the bin directory as its last line.
#   FISSION_K8S_PROXY_CACHE overrides the cache root.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KV=v1.37.2

command -v go >/dev/null || { echo "Error: go is not installed (needed to build kube-proxy; scripts/k8s/ensure-go.sh fetches it)" >&2; exit 1; }

key=$( { cat "$HERE/proxy-tools/go.mod" "$HERE/proxy-tools/go.sum"; echo "$KV"; go env GOVERSION; } \
       | sha256sum | cut -c1-16)
root=${FISSION_K8S_PROXY_CACHE:-$HOME/.cache/fission-rs/k8s-proxy}
bin=$root/$key/bin

mkdir -p "$root"
exec 9>"$root/$key.lock"
flock 9

if [ -x "$bin/kube-proxy" ]; then
  echo "kube-proxy: cache hit in $bin" >&2
  echo "$bin"; exit 0
fi

echo "kube-proxy: cache miss, building $KV into $bin" >&2
# Built into a temporary dir and renamed at the end: an interrupted build never looks like a hit.
tmp=$root/$key/bin.tmp.$$
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0 GOTOOLCHAIN=local
LD="-s -w"
for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  LD="$LD -X $p.gitVersion=$KV -X $p.gitMajor=1 -X $p.gitMinor=37 -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
t0=$(date +%s)
(cd "$HERE/proxy-tools" && go mod download && \
  nice -n 10 go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags "$LD" -o "$tmp/" tool)
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "kube-proxy: built in $(( $(date +%s) - t0 )) s" >&2
echo "$bin"
