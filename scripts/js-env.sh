#!/usr/bin/env bash
# Sets up the JavaScript guest SDK: installs guest-sdk-js's pinned dependencies (esbuild,
# componentize-js) into guest-sdk-js/node_modules (never committed) with `npm ci`, only when
# package.json or package-lock.json changed since the last install. Prints the SDK's folder,
# whose bin/swarmtel-recorder.js is the build command.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sdk="$root/guest-sdk-js"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "js-env: node and npm are needed (Node.js 20 or later): https://nodejs.org" >&2
    exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if (( major < 20 )); then
    echo "js-env: Node.js 20 or later is needed, found $(node --version)" >&2
    exit 1
fi
stamp="$sdk/node_modules/.swarmtel-lock.sha256"
want="$(cat "$sdk/package.json" "$sdk/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    (cd "$sdk" && npm ci --no-audit --no-fund --loglevel=error >&2)
    echo "$want" >"$stamp"
fi
echo "$sdk"
