#!/usr/bin/env bash
# Build the wasm package into web/pkg (git-ignored): the tramway-web crate for
# wasm32-unknown-unknown in release, then wasm-bindgen --target web (no bundler needed). Installs
# the wasm32 target and the wasm-bindgen CLI of the version Cargo.lock pins when they are missing
# (the CLI into ${TRAMWAY_CACHE:-~/.cache/tramway}/tools, built once).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${TRAMWAY_CACHE:-$HOME/.cache/tramway}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"

rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
bindgen="$CACHE/tools/bin/wasm-bindgen"
if ! [ -x "$bindgen" ] || [ "$("$bindgen" --version | cut -d' ' -f2)" != "$version" ]; then
  echo "== installing wasm-bindgen-cli $version (once; a few minutes)"
  cargo install -q wasm-bindgen-cli --version "$version" --force --root "$CACHE/tools"
fi
echo "== building the wasm package (web/pkg)"
cargo build -q --release -p tramway-web --lib --target wasm32-unknown-unknown
"$bindgen" --target web --no-typescript --out-dir web/pkg "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/tramway_web.wasm"
ls -l web/pkg/tramway_web_bg.wasm | awk '{ printf "web/pkg/tramway_web_bg.wasm: %.1f MB\n", $5 / 1e6 }'
