#!/usr/bin/env bash
# The browser test: build the wasm package, run web/scenario.json natively (the reference), then
# in headless Chromium's WebGPU through the page and its JavaScript API, and compare (web/test.mjs
# states every check and tolerance). Installs what it needs on a Debian machine: the wasm32
# target and wasm-bindgen CLI (web/build.sh), Debian's chromium, nodejs and npm, playwright-core
# from npm (into ${TRAMWAY_CACHE:-~/.cache/tramway}/npm), and all-MiniLM-L6-v2 (models/fetch.sh).
# Writes runs/web/{reference.json,browser.json,page.png}.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${TRAMWAY_CACHE:-$HOME/.cache/tramway}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"

bash tools/apt-need.sh chromium=chromium node=nodejs npm=npm
export TRAMWAY_NPM="$CACHE/npm"
if ! [ -d "$TRAMWAY_NPM/node_modules/playwright-core" ]; then
  echo "== installing playwright-core (npm) into $TRAMWAY_NPM"
  mkdir -p "$TRAMWAY_NPM"
  npm install -q --no-audit --no-fund --prefix "$TRAMWAY_NPM" playwright-core@1 >/dev/null
fi

bash models/fetch.sh minilm >/dev/null
bash web/build.sh

out=runs/web
mkdir -p "$out"
echo "== the scenario natively (the reference)"
cargo build -q --release -p tramway-web --bin web-reference
"$CARGO_TARGET_DIR/release/web-reference" web/scenario.json > "$out/reference.json"
echo "== the scenario and the demo in headless Chromium (WebGPU)"
node web/test.mjs "$out/reference.json" "$out"
