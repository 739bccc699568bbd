#!/bin/sh
# The Node.js builder's default build (Fission's nodejs/builder/build.sh): npm install in the
# source when it has a package.json, the whole directory deployed.
set -eu
if [ -f "${SRC_PKG}/package.json" ]; then
    cd "${SRC_PKG}" && npm install --no-audit --no-fund
fi
cp -r "${SRC_PKG}" "${DEPLOY_PKG}"
