#!/usr/bin/env bash
# Sets up and runs every test:
#  1. adds the wasm32-wasip2 target if missing and builds the guest plugins from source;
#  2. the whole workspace's tests (unit, integration against the real binary, doc);
#  3. the Python side, in the virtualenv scripts/python-env.sh makes under target/: the
#     bridge's own tests, then the live end-to-end runs (real Locust, master + 2 workers and
#     standalone, through `swarmtel serve`).
# Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/build-guests.sh >/dev/null
cargo test --workspace "$@"
venv="$(scripts/python-env.sh)"
SWARMTEL_BIN="$PWD/target/debug/swarmtel" "$venv/bin/python" -m pytest -q bridge/tests tests/live
