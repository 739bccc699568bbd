#!/usr/bin/env bash
# Builds the images a test node runs, from this machine's Debian packages and the repo, with
# no registry: rootfs directories packed by mkimage.sh into OCI archives in OUT_DIR.
#
#   localhost/pause:fission-rs             Kubernetes' pause (built by build-node-binaries.sh)
#   localhost/fission-rs-nodejs:local      node + environments/nodejs (listens on 0.0.0.0:8888)
#   localhost/fission-rs-python:local      python3 + environments/python (+ its vendored Flask)
#   localhost/fission-rs:local             the fission binary (CLI and every server role: the
#                                          chart's controller, router and executor), CA certs
#   localhost/fission-rs-fetcher:local     the same rootfs, run as `fission fetcher` (one
#                                          archive, one layer: stored once)
#   localhost/fission-rs-python-builder:local  python3 + pip, /build (environments/python/builder),
#                                          the fission binary as /builder (Fission's builder API)
#   localhost/fission-rs-node-builder:local    node + npm, /build (environments/nodejs/builder), /builder
#
# Usage: build-images.sh OUT_DIR FISSION_BINARY [NODE_BIN_DIR]
# Each archive is rebuilt only when its inputs changed (a hash of them is kept beside it).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd); REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:?usage: build-images.sh OUT_DIR FISSION_BINARY}; FISSION=${2:?fission binary}
NBIN=${3:-$("$HERE/build-node-binaries.sh" | tail -n1)}
mkdir -p "$OUT"

# copy_bin ROOTFS FILE…: the files plus the shared libraries they load (ldd), same paths.
copy_bin() {
  local root=$1 f lib; shift
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"; cp -L "$f" "$root$f"
    for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*' | sort -u); do
      [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
    done
  done
}
base_rootfs() { # the few files every image needs
  mkdir -p "$1/etc" "$1/tmp" "$1/userfunc" "$1/secrets" "$1/configs" "$1/dev" "$1/proc" "$1/sys"
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$1/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$1/etc/group"
  [ -d /etc/ssl/certs ] && mkdir -p "$1/etc/ssl" && cp -rL /etc/ssl/certs "$1/etc/ssl/" 2>/dev/null || true
}
# build NAME TAG KEY-INPUTS… -- runs make_NAME ROOTFS, packs it; skipped when the key matches.
build() {
  local name=$1 image=$2 key=$3 tar=$OUT/$1.oci.tar
  if [ -f "$tar" ] && [ "$(cat "$tar.key" 2>/dev/null)" = "$key" ]; then echo "image $image: up to date" >&2; return 0; fi
  local root; root=$(mktemp -d); trap 'rm -rf "$root"' RETURN
  "make_$name" "$root"
  "$HERE/mkimage.sh" "$root" "$image" "$tar" "${EP:-null}" "${CMD:-null}" "${ENVS:-[]}"
  echo "$key" > "$tar.key"
}
hash_of() { { for f in "$@"; do if [ -d "$f" ]; then (cd "$f" && find . -type f -print0 | sort -z | xargs -0 sha256sum); else sha256sum "$f"; fi; done; } | sha256sum | cut -c1-16; }

make_pause() { mkdir -p "$1"; cp "$NBIN/pause" "$1/pause"; }
EP='["/pause"]' CMD=null ENVS='[]' build pause localhost/pause:fission-rs "$(hash_of "$NBIN/pause" "$HERE/mkimage.sh")"

NODE=$(readlink -f "$(command -v node)")
[ -d "$REPO/environments/nodejs/node_modules" ] || (cd "$REPO/environments/nodejs" && npm ci --omit=dev --no-audit --no-fund >&2)
make_nodejs() {
  base_rootfs "$1"; copy_bin "$1" "$NODE"; mkdir -p "$1/usr/bin"; [ "$NODE" = /usr/bin/node ] || ln -s "$NODE" "$1/usr/bin/node"
  mkdir -p "$1/app"; cp -r "$REPO/environments/nodejs/server.js" "$REPO/environments/nodejs/package.json" "$REPO/environments/nodejs/node_modules" "$1/app/"
}
EP='["/usr/bin/node", "/app/server.js"]' CMD=null ENVS='["HOST=0.0.0.0", "NODE_ENV=production"]' \
  build nodejs localhost/fission-rs-nodejs:local "$(hash_of "$NODE" "$REPO/environments/nodejs/server.js" "$REPO/environments/nodejs/node_modules" "$HERE/mkimage.sh")"

PY=$(readlink -f /usr/bin/python3); PYV=$(basename "$PY")
python_base() {
  base_rootfs "$1"; copy_bin "$1" "$PY"; ln -s "$PYV" "$1/usr/bin/python3"
  mkdir -p "$1/usr/lib"; cp -r "/usr/lib/$PYV" "$1/usr/lib/"
  rm -rf "$1/usr/lib/$PYV/test" "$1/usr/lib/$PYV/dist-packages" "$1/usr/lib/$PYV"/config-*
  for so in "$1/usr/lib/$PYV/lib-dynload"/*.so; do copy_bin "$1" "/usr/lib/$PYV/lib-dynload/$(basename "$so")"; done
}
make_python() {
  python_base "$1"
  mkdir -p "$1/app"; cp "$REPO/environments/python/server.py" "$1/app/"
  python3 -m pip install --quiet --no-deps --disable-pip-version-check --target "$1/app/vendor" -r "$REPO/environments/python/requirements.txt" >&2
}
EP='["/usr/bin/python3", "/app/server.py"]' CMD=null ENVS='["HOST=0.0.0.0", "PYTHONPATH=/app/vendor"]' \
  build python localhost/fission-rs-python:local "$(hash_of "$PY" "$REPO/environments/python/server.py" "$REPO/environments/python/requirements.txt" "$HERE/mkimage.sh")"

# The binary at /usr/bin/fission as in the Dockerfile's image; its data under /var/lib/fission.
make_fission() {
  base_rootfs "$1"; local bin; bin=$(readlink -f "$FISSION"); copy_bin "$1" "$bin"
  mkdir -p "$1/usr/bin" "$1/var/lib/fission"; [ "$bin" = /usr/bin/fission ] || mv "$1$bin" "$1/usr/bin/fission"
}
rm -f "$OUT/fetcher.oci.tar" "$OUT/fetcher.oci.tar.key"   # now inside fission.oci.tar
ALSO='[{"name": "localhost/fission-rs-fetcher:local", "entrypoint": ["/usr/bin/fission", "fetcher"]}]' \
EP='["/usr/bin/fission"]' CMD=null ENVS='["FISSION_DATA_DIR=/var/lib/fission"]' \
  build fission localhost/fission-rs:local "$(hash_of "$FISSION" "$HERE/mkimage.sh" "$HERE/build-images.sh")"

# Builder images: Fission's builder API as /builder (the fission binary: named `builder`, it runs
# `fission builder`), the default build as /build, and a shell with the few tools builds use.
builder_base() {
  copy_bin "$1" "$(readlink -f "$FISSION")"; mv "$1$(readlink -f "$FISSION")" "$1/builder"
  copy_bin "$1" /usr/bin/dash /usr/bin/env /usr/bin/cp /usr/bin/mkdir /usr/bin/rm /usr/bin/ls /usr/bin/cat
  ln -s dash "$1/usr/bin/sh"; [ -e "$1/bin" ] || ln -s usr/bin "$1/bin"
  mkdir -p "$1/usr/local/bin" "$1/packages"; ln -s /build "$1/usr/local/bin/build"
}
make_python_builder() {
  python_base "$1"; builder_base "$1"
  # Debian's pip (its dependencies vendored inside it), on the interpreter's dist-packages path.
  mkdir -p "$1/usr/lib/python3/dist-packages"; cp -r /usr/lib/python3/dist-packages/pip "$1/usr/lib/python3/dist-packages/"
  printf '#!/bin/sh\nexec /usr/bin/python3 -m pip "$@"\n' > "$1/usr/bin/pip3"; chmod +x "$1/usr/bin/pip3"
  cp "$REPO/environments/python/builder/build.sh" "$1/build"; chmod +x "$1/build"
}
EP='["/builder", "/packages"]' CMD=null ENVS='["HOME=/tmp", "PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_NO_CACHE_DIR=1"]' \
  build python_builder localhost/fission-rs-python-builder:local "$(hash_of "$FISSION" "$PY" /usr/lib/python3/dist-packages/pip "$REPO/environments/python/builder" "$HERE/mkimage.sh" "$HERE/build-images.sh")"

NPM=/usr/lib/node_modules/npm
make_node_builder() {
  base_rootfs "$1"; copy_bin "$1" "$NODE"; mkdir -p "$1/usr/bin"; [ "$NODE" = /usr/bin/node ] || ln -s "$NODE" "$1/usr/bin/node"
  builder_base "$1"
  mkdir -p "$1/usr/lib/node_modules"; cp -r "$NPM" "$1/usr/lib/node_modules/"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/bin/npm"
  cp "$REPO/environments/nodejs/builder/build.sh" "$1/build"; chmod +x "$1/build"
}
EP='["/builder", "/packages"]' CMD=null ENVS='["HOME=/tmp", "npm_config_update_notifier=false"]' \
  build node_builder localhost/fission-rs-node-builder:local "$(hash_of "$FISSION" "$NODE" "$NPM" "$REPO/environments/nodejs/builder" "$HERE/mkimage.sh" "$HERE/build-images.sh")"
echo "$OUT"
