#!/usr/bin/env bash
# Sets up and runs every test:
#  1. adds the wasm32-wasip2 target if missing and builds the guest plugins from source;
#  2. the whole workspace's tests (unit, integration against the real binary, doc);
#  3. the Python side, in the virtualenv scripts/python-env.sh makes under target/ (Locust,
#     pytest, componentize-py, the bridge and the Python guest SDK): the bridge's own tests,
#     the Python SDK's tests, the Python and JavaScript example plugins built from source and
#     replayed by swarmtel, then the live end-to-end runs (real Locust, master + 2 workers and
#     standalone, through `swarmtel serve`);
#  4. the JavaScript guest SDK's own tests under Node (scripts/js-env.sh installs its pinned
#     packages with npm);
#  5. with a real Prometheus (Debian's package, installed by scripts/prometheus-env.sh when
#     missing) scraping `swarmtel serve` during a live Locust run.
# Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/build-guests.sh >/dev/null
cargo test --workspace "$@"
venv="$(scripts/python-env.sh)"
sdk_js="$(scripts/js-env.sh)"
(cd "$sdk_js" && SWARMTEL_BIN="$PWD/../target/debug/swarmtel" node --test test/*.test.mjs)
# One pytest run per suite: each has its own conftest.py.
pytest=(env SWARMTEL_BIN="$PWD/target/debug/swarmtel" "$venv/bin/python" -m pytest -q -p no:cacheprovider)
"${pytest[@]}" guest-sdk-python/tests
"${pytest[@]}" tests/polyglot
prometheus="$(scripts/prometheus-env.sh)"
PROMETHEUS_BIN="$prometheus" "${pytest[@]}" bridge/tests tests/live
