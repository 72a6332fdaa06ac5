#!/usr/bin/env bash
# Sets up and runs every test: adds the wasm32-wasip2 target if missing, builds the guest
# plugins from source, then runs the whole workspace's tests (unit, integration, doc).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/build-guests.sh >/dev/null
cargo test --workspace "$@"
