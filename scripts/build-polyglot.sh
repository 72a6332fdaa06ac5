#!/usr/bin/env bash
# Builds the request-stats recorder in its three languages from source, for side-by-side
# benchmarks: Rust (scripts/build-guests.sh), Python (swarmtel-recorder build, in the venv of
# scripts/python-env.sh) and JavaScript (guest-sdk-js's build command, after scripts/js-env.sh),
# with each JavaScript engine. Prints the four .wasm paths, one per line: Rust, Python,
# JavaScript (QuickJS, the default engine), JavaScript (SpiderMonkey).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/target/polyglot"
mkdir -p "$out"
rust="$("$root/scripts/build-guests.sh")/request_stats.wasm"
venv="$("$root/scripts/python-env.sh")"
sdk_js="$("$root/scripts/js-env.sh")"
"$venv/bin/python" -m swarmtel_recorder build "$root/example-plugins/request-stats-py/request_stats_py" \
    -o "$out/request_stats_py.wasm" >&2
for engine in quickjs spidermonkey; do
    node "$sdk_js/bin/swarmtel-recorder.js" build "$root/example-plugins/request-stats-js/recorder.js" \
        --engine "$engine" -o "$out/request_stats_js_$engine.wasm" >&2
done
printf '%s\n' "$rust" "$out/request_stats_py.wasm" "$out/request_stats_js_quickjs.wasm" \
    "$out/request_stats_js_spidermonkey.wasm"
