#!/usr/bin/env bash
# Sets up the Python environment the live runs and the Python guest SDK need: a virtualenv in
# target/py-venv (build output, never committed) with Locust, pytest and componentize-py from
# scripts/python-requirements.txt, the bridge installed from bridge/ and the Python guest SDK
# (swarmtel-recorder) from guest-sdk-python/. Installs the requirements only when they changed;
# reinstalls the bridge and the SDK every time (they are small), so the venv always has the
# checked-out code.
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
mkdir "$build/bridge" "$build/sdk"
cp -r "$root/bridge/." "$build/bridge/"
"${pip[@]}" install --no-deps --force-reinstall "$build/bridge" >&2
# -L: the SDK's wit/telemetry.wit is a symlink to wit/0.2.0/telemetry.wit; the copy holds the file.
cp -rL "$root/guest-sdk-python/." "$build/sdk/"
"${pip[@]}" install --no-deps --force-reinstall "$build/sdk" >&2
echo "$venv"
