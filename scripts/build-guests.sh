#!/usr/bin/env bash
# Builds every guest plugin (example plugins and test guests) from source for wasm32-wasip2.
# Output: target/guests/wasm32-wasip2/release/<crate_name>.wasm
# A separate target dir, so tests can call this while `cargo test` holds target/'s lock.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2 >&2
fi
packages=()
for manifest in example-plugins/*/Cargo.toml tests/guests/*/Cargo.toml; do
    [ -f "$manifest" ] || continue
    name=$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -n 1)
    packages+=(-p "$name")
done
CARGO_TARGET_DIR="$root/target/guests" cargo build --quiet --release --target wasm32-wasip2 "${packages[@]}" "$@" >&2
echo "$root/target/guests/wasm32-wasip2/release"
