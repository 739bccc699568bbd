#!/usr/bin/env bash
# Packs a root filesystem directory as a single-layer OCI image archive that
# `ctr images import` loads — no registry and no image tool, only tar, sha256sum and jq.
# The layer is uncompressed (imports are local, and gzip of a 100 MB layer costs seconds).
#
# Usage: mkimage.sh ROOTFS IMAGE-NAME OUT.tar ENTRYPOINT-JSON [CMD-JSON] [ENV-JSON-ARRAY]
#   ALSO='[{"name": N, "entrypoint": [...]}, …]' (env) adds images of the same rootfs with
#   another entrypoint to the archive: they share the layer blob, so neither the archive nor
#   containerd holds the rootfs twice.
set -euo pipefail
ROOT=$1; NAME=$2; OUT=$3; EP=$4; CMD=${5:-null}; ENV=${6:-'[]'}; ALSO=${ALSO:-'[]'}
command -v jq >/dev/null || { echo "Error: jq is not installed (needed to write the image config)" >&2; exit 1; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
mkdir -p "$W/blobs/sha256"
put() { local d; d=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$W/blobs/sha256/$d"; echo "$d"; }
# Reproducible: sorted names, owner 0, fixed mtime — the same rootfs gives the same digest.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$ROOT" -cf "$W/layer.tar" .
LSIZE=$(stat -c%s "$W/layer.tar"); LDIG=$(put "$W/layer.tar")
# manifest NAME ENTRYPOINT-JSON: writes the image's config and manifest blobs and prints the
# index entry naming it.
manifest() {
  local name=$1 ep=$2 cdig csize mdig msize
  jq -cn --argjson ep "$ep" --argjson cmd "$CMD" --argjson env "$ENV" --arg diff "sha256:$LDIG" '{
    architecture:"amd64", os:"linux",
    config:{Env:(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + $env),
            Entrypoint:$ep, Cmd:$cmd, WorkingDir:"/"},
    rootfs:{type:"layers", diff_ids:[$diff]}, history:[{created_by:"scripts/k8s/mkimage.sh"}]}' > "$W/config.json"
  csize=$(stat -c%s "$W/config.json"); cdig=$(put "$W/config.json")
  jq -cn --arg c "sha256:$cdig" --argjson cs "$csize" --arg l "sha256:$LDIG" --argjson ls "$LSIZE" '{
    schemaVersion:2, mediaType:"application/vnd.oci.image.manifest.v1+json",
    config:{mediaType:"application/vnd.oci.image.config.v1+json", digest:$c, size:$cs},
    layers:[{mediaType:"application/vnd.oci.image.layer.v1.tar", digest:$l, size:$ls}]}' > "$W/manifest.json"
  msize=$(stat -c%s "$W/manifest.json"); mdig=$(put "$W/manifest.json")
  # io.containerd.image.name is what makes `ctr images import` keep the full name.
  jq -cn --arg m "sha256:$mdig" --argjson ms "$msize" --arg n "$name" '{
    mediaType:"application/vnd.oci.image.manifest.v1+json", digest:$m, size:$ms,
    platform:{architecture:"amd64", os:"linux"},
    annotations:{"io.containerd.image.name":$n, "org.opencontainers.image.ref.name":($n|split(":")|last)}}'
  echo "$OUT: $name manifest sha256:$mdig" >&2
}
{
  manifest "$NAME" "$EP"
  n=$(jq length <<<"$ALSO")
  for ((i = 0; i < n; i++)); do
    manifest "$(jq -r ".[$i].name" <<<"$ALSO")" "$(jq -c ".[$i].entrypoint" <<<"$ALSO")"
  done
} | jq -cs '{schemaVersion:2, mediaType:"application/vnd.oci.image.index.v1+json", manifests:.}' > "$W/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$W/oci-layout"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$W" -cf "$OUT.tmp" oci-layout index.json blobs
mv "$OUT.tmp" "$OUT"
