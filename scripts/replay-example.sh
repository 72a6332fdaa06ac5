#!/usr/bin/env bash
# The main job on a fresh machine: builds the example plugins from source and replays the
# captured Locust run (examples/locust-run.ndjson) through them, printing telemetry as JSON
# lines on stdout and the run summary on stderr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/build-guests.sh >/dev/null
cargo run --quiet -p swarmtel -- replay --config examples/swarmtel.toml examples/locust-run.ndjson "$@"
