#!/usr/bin/env bash
# npm run build: the crate for wasm32 (profile wasm-release) → wasm-bindgen (ESM + .d.ts) → wasm-opt → pkg/,
# and a copy of the package (js/ + pkg/) into www/webbert/ for the demo page.
set -euo pipefail
cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"

rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || rustup target list --installed | grep -q wasm32-unknown-unknown
version=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
if ! wasm-bindgen --version 2>/dev/null | grep -q " $version\$"; then
  echo "installing wasm-bindgen-cli $version (the Cargo.lock version)"
  cargo install wasm-bindgen-cli --version "$version"
fi
[ -x node_modules/.bin/wasm-opt ] || npm install --no-audit --no-fund

cargo build --profile wasm-release --lib --target wasm32-unknown-unknown
rm -rf pkg
wasm-bindgen --target web --out-dir pkg --remove-name-section --remove-producers-section \
  "$target_dir/wasm32-unknown-unknown/wasm-release/webbert.wasm"
# npm's binaryen (Debian's wasm-opt 108 breaks wasm-bindgen's externref table).
node_modules/.bin/wasm-opt "${WASM_OPT_LEVEL:--O1}" \
  --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext --enable-reference-types \
  --enable-multivalue --enable-mutable-globals pkg/webbert_bg.wasm -o pkg/webbert_bg.wasm
rm -f pkg/.gitignore pkg/package.json

# Beside it, what a server that compresses sends (scripts/serve.mjs serves it to the demo).
gzip -9 -k -f pkg/webbert_bg.wasm

rm -rf www/webbert
mkdir -p www/webbert
cp -r js pkg www/webbert/
raw=$(stat -c %s pkg/webbert_bg.wasm)
gz=$(stat -c %s pkg/webbert_bg.wasm.gz)
echo "pkg/webbert_bg.wasm: $raw bytes, $gz gzipped"
