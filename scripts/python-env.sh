#!/usr/bin/env bash
# Sets up the Python environment the live runs need: a virtualenv in target/py-venv (build
# output, never committed) with Locust and pytest from scripts/python-requirements.txt, and
# the bridge installed from bridge/. Installs the requirements only when they changed;
# reinstalls the bridge every time (it is small), so the venv always has the checked-out code.
# Prints the virtualenv's path on stdout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${SWARMTEL_PY_VENV:-$root/target/py-venv}"
requirements="$root/scripts/python-requirements.txt"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv" >&2
fi
pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check)
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    "${pip[@]}" install -r "$requirements" >&2
    echo "$want" >"$stamp"
fi
# Build from a copy, so setuptools' build/ and egg-info never land in the source tree.
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
cp -r "$root/bridge/." "$build/"
"${pip[@]}" install --no-deps --force-reinstall "$build" >&2
echo "$venv"
