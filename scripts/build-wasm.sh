#!/usr/bin/env bash
# npm run build: the crate for wasm32 (profile wasm-release, twice) → wasm-bindgen (ESM + .d.ts) → wasm-opt → pkg/,
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

# Two builds of the same code; the package loads one per browser (js/index.js): SIMD128 alone, which every
# current browser has, and with relaxed SIMD too, whose multiply-add (fused where the CPU has FMA) speeds the CPU
# path's products. Only our crate is compiled again for the second: `cargo rustc` gives the flag to it alone,
# and the dependencies keep SIMD128 (macerator 0.5.2 does not compile with relaxed SIMD on).
cargo build --profile wasm-release --lib --target wasm32-unknown-unknown
bindgen() { # OUT_DIR: wasm-bindgen's ESM and .d.ts for the module just built
  wasm-bindgen --target web --out-dir "$1" --remove-name-section --remove-producers-section \
    "$target_dir/wasm32-unknown-unknown/wasm-release/webbert.wasm"
}
rm -rf pkg
bindgen pkg
cargo rustc --profile wasm-release --lib --target wasm32-unknown-unknown -- -C target-feature=+relaxed-simd
relaxed=$(mktemp -d)
bindgen "$relaxed"
# One JS binding serves both modules, so they must import and export the same.
if ! cmp -s pkg/webbert.js "$relaxed/webbert.js"; then
  echo "build-wasm.sh: the relaxed-SIMD build's bindings differ from the SIMD128 build's" >&2
  exit 1
fi
mv "$relaxed/webbert_bg.wasm" pkg/webbert_relaxed_bg.wasm
rm -rf "$relaxed" pkg/.gitignore pkg/package.json
# npm's binaryen (Debian's wasm-opt 108 breaks wasm-bindgen's externref table).
features="--enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext --enable-reference-types
  --enable-multivalue --enable-mutable-globals"
node_modules/.bin/wasm-opt "${WASM_OPT_LEVEL:--O1}" $features pkg/webbert_bg.wasm -o pkg/webbert_bg.wasm
node_modules/.bin/wasm-opt "${WASM_OPT_LEVEL:--O1}" $features --enable-relaxed-simd \
  pkg/webbert_relaxed_bg.wasm -o pkg/webbert_relaxed_bg.wasm

# Beside them, what a server that compresses sends (scripts/serve.mjs serves it to the demo).
gzip -9 -k -f pkg/webbert_bg.wasm pkg/webbert_relaxed_bg.wasm

rm -rf www/webbert
mkdir -p www/webbert
cp -r js pkg www/webbert/
for wasm in pkg/webbert_bg.wasm pkg/webbert_relaxed_bg.wasm; do
  echo "$wasm: $(stat -c %s "$wasm") bytes, $(stat -c %s "$wasm.gz") gzipped"
done
