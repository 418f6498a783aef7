#!/usr/bin/env bash
# Creates (once) a virtualenv holding the pinned Ray the tests run as a real head, and prints
# its path. It lives outside the clone, under the WasmRay cache, keyed by Ray and Python
# versions, so CI's fresh clones reuse it and a version bump gets a new one.
#
#   venv=$(tests/scripts/ray-venv.sh)   # then: "$venv/bin/ray" start --head ...
#
# Env: RAY_VERSION (default the pinned one), PYTHON (default python3, must be 3.9-3.13).
set -euo pipefail
source "$(dirname "$0")/common.sh"

ray_version="${RAY_VERSION:-2.60.0}"
# The dashboard (the Jobs API, the autoscaler's view) and Serve (RayService).
extras="default,serve"
python="${PYTHON:-python3}"
py_version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
venv="$WASMRAY_CACHE/ray/${ray_version}-${extras/,/-}-py${py_version}"
# Written last: a venv without it is a partial install (interrupted) and is rebuilt.
marker="$venv/.wasmray-complete"

if [ ! -f "$marker" ]; then
  mkdir -p "$WASMRAY_CACHE/ray"
  # Two test runs may ask at once: one installs, the other waits for it.
  exec 9>"$venv.lock"
  flock 9
  if [ ! -f "$marker" ]; then
    log "installing ray[$extras]==$ray_version into $venv (once; about 90 MB from PyPI)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      "ray[$extras]==$ray_version" >&2
    "$venv/bin/ray" --version >&2
    touch "$marker"
  fi
fi
printf '%s\n' "$venv"
