#!/usr/bin/env bash
# Regenerates what is derived from the Helm chart, so the checked-in copies never drift
# (crates/fission/tests/helm_chart.rs fails when they do):
#   charts/fission-rs/crds/   <- deploy/crds/ (generated from the core types)
#   deploy/fission-rs.yaml    <- `helm template` of the chart with its defaults, namespace
#                                `fission`, CRDs and the Namespace object included
# helm comes from HELM_BIN (a directory) or scripts/k8s/build-helm.sh (cached).
# FISSION_RENDER_TO=DIR writes DIR/fission-rs.yaml only (the drift test compares it).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
helm_dir=${HELM_BIN:-$(scripts/k8s/build-helm.sh | tail -n1)}

out=deploy/fission-rs.yaml
if [ -n "${FISSION_RENDER_TO:-}" ]; then
  out=$FISSION_RENDER_TO/fission-rs.yaml
else
  rm -f charts/fission-rs/crds/*.yaml
  cp deploy/crds/*.yaml charts/fission-rs/crds/
fi
{
  echo "# Rendered from charts/fission-rs by scripts/k8s/render-manifests.sh; do not edit."
  echo "# kubectl apply -f deploy/fission-rs.yaml  (namespace fission, NodePorts 31313/31314)"
  echo "# First create the API token Secret the components read:"
  echo "#   kubectl -n fission create secret generic fission-rs-auth --from-literal=FISSION_AUTH_TOKEN=\$(openssl rand -hex 32)"
  "$helm_dir/helm" template fission-rs charts/fission-rs --namespace fission \
    --include-crds --set createNamespace=true --set auth.generateToken=false
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "rendered $out ($(grep -c '^kind:' "$out") objects)" >&2
