#!/usr/bin/env bash
# Builds what a test node needs beside the control plane: kube-controller-manager,
# kube-scheduler and kubelet (k8s.io/kubernetes from the Go module proxy, module in
# node-tools/), containerd 2 + ctr + containerd-shim-runc-v2 and crictl (go install from
# the proxy), and Kubernetes' own pause binary (pause.c from the kubernetes module zip,
# gcc -static). Cached in ~/.cache/fission-rs/k8s-node/<hash>, keyed on node-tools'
# go.mod/go.sum, the containerd/crictl versions and the Go version; a second run costs
# seconds. runc and the CNI plugins come from Debian (apt: runc containernetworking-plugins).
#
# Usage: scripts/k8s/build-node-binaries.sh   -> prints the bin directory as its last line.
#   FISSION_K8S_NODE_CACHE overrides the cache root.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KV=v1.37.2
CONTAINERD_V=v2.4.2
CRICTL_V=v1.37.0

command -v go >/dev/null || { echo "Error: go is not installed (needed to build the kubelet and containerd)" >&2; exit 1; }
command -v gcc >/dev/null || { echo "Error: gcc is not installed (needed to build the pause binary)" >&2; exit 1; }

key=$( { cat "$HERE/node-tools/go.mod" "$HERE/node-tools/go.sum"; \
         echo "$KV $CONTAINERD_V $CRICTL_V"; go env GOVERSION; } | sha256sum | cut -c1-16)
root=${FISSION_K8S_NODE_CACHE:-$HOME/.cache/fission-rs/k8s-node}
bin=$root/$key/bin
want="kube-controller-manager kube-scheduler kubelet containerd ctr containerd-shim-runc-v2 crictl pause"

mkdir -p "$root"
exec 9>"$root/$key.lock"
flock 9

have=1
for b in $want; do [ -x "$bin/$b" ] || have=0; done
if [ $have = 1 ]; then
  echo "k8s node binaries: cache hit in $bin" >&2
  echo "$bin"; exit 0
fi

echo "k8s node binaries: cache miss, building into $bin (about 10 minutes cold on 2 cores)" >&2
# Built into a temporary dir and renamed at the end: an interrupted build never looks like a hit.
tmp=$root/$key/bin.tmp.$$
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0 GOTOOLCHAIN=local

LD="-s -w"
for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  LD="$LD -X $p.gitVersion=$KV -X $p.gitMajor=1 -X $p.gitMinor=37 -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
(cd "$HERE/node-tools" && go mod download && \
  nice -n 10 go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags "$LD" -o "$tmp/" tool)

CLD="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_V -X github.com/containerd/containerd/v2/version.Revision=gomodproxy"
TAGS="urfave_cli_no_docs no_btrfs no_devmapper no_zfs osusergo netgo static_build"
GOBIN=$tmp nice -n 10 go install -trimpath -tags "$TAGS" -ldflags "$CLD" \
  "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_V" "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_V"
# The shim without grpc, as containerd's own Makefile builds it.
GOBIN=$tmp nice -n 10 go install -trimpath -tags "$TAGS no_grpc" -ldflags "$CLD" \
  "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_V"
GOBIN=$tmp nice -n 10 go install -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_V" \
  "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_V"

# The sandbox ("pause") image's binary, from the same kubernetes module the kubelet came from.
modcache=$(go env GOMODCACHE)
pause_c=$modcache/k8s.io/kubernetes@$KV/build/pause/linux/pause.c
[ -f "$pause_c" ] || (cd "$HERE/node-tools" && go mod download "k8s.io/kubernetes@$KV")
gcc -Os -static -Wall -Werror -DVERSION="$KV-fission-rs" -o "$tmp/pause" "$pause_c"
strip "$tmp/pause"

rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
echo "$bin"
