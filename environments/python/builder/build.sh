#!/bin/sh
# The Python builder's default build (Fission's python/builder defaultBuildCmd): the
# requirements installed next to the source, the whole directory deployed.
set -eu
if [ -f "${SRC_PKG}/requirements.txt" ]; then
    pip3 install -r "${SRC_PKG}/requirements.txt" -t "${SRC_PKG}"
fi
cp -r "${SRC_PKG}" "${DEPLOY_PKG}"
