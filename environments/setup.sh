#!/usr/bin/env bash
# Installs the runtimes' dependencies (idempotent):
#   nodejs/node_modules  <- npm ci (package-lock.json)
#   python/vendor        <- pip --no-deps --target (requirements.txt, all pinned)
# and pytest for the Python test suite if it is missing.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE_DIR="$HERE/nodejs"
PY_DIR="$HERE/python"
PIP_PYTHON="${PIP_PYTHON:-python3}"   # any CPython 3.11 with pip

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

# --- Node.js ---------------------------------------------------------------
lock_hash="$(hash_of "$NODE_DIR/package-lock.json")"
stamp="$NODE_DIR/node_modules/.fission-lock-sha256"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$lock_hash" ]]; then
  echo "nodejs: node_modules up to date"
else
  echo "nodejs: npm ci"
  (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" >"$stamp"
fi

# --- Python ----------------------------------------------------------------
req_hash="$(hash_of "$PY_DIR/requirements.txt")"
stamp="$PY_DIR/vendor/.fission-requirements-sha256"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$req_hash" ]]; then
  echo "python: vendor up to date"
else
  echo "python: pip install --target vendor"
  rm -rf "$PY_DIR/vendor"
  "$PIP_PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$PY_DIR/vendor" -r "$PY_DIR/requirements.txt"
  echo "$req_hash" >"$stamp"
fi

# The runtime itself runs on /usr/bin/python3 -I -S; check it can import Flask.
/usr/bin/python3 -I -S -c "import sys; sys.path.insert(0, '$PY_DIR/vendor'); import flask" \
  || { echo "python: /usr/bin/python3 cannot import the vendored Flask" >&2; exit 1; }

# --- test tooling ------------------------------------------------------------
if ! "$PIP_PYTHON" -c "import pytest" 2>/dev/null; then
  echo "pytest missing: pip install pytest"
  "$PIP_PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore pytest
fi
