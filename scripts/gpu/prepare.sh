#!/usr/bin/env bash
# Stages, on this (development) machine, what the GPU machine's calls carry: the device has no network, so
# everything it runs travels in ignored folders of the checkout (each call's working tree, these included,
# must stay under 64 MiB). See "On a real GPU" in the README for the calls that use them.
#   scripts/gpu/prepare.sh native     .gl/  Debian 12's Vulkan and GL loaders (the image has NVIDIA's driver
#                                           but no loader), .gpu/ the release CLI and native bench (stripped,
#                                           xz), vulkaninfo, the bench models' layout (weights made there);
#                                           with BASELINE=REV also the bench as built at commit REV
#   scripts/gpu/prepare.sh chromium   .chr1/, .chr2/, …  Debian's Chromium in parts, .chr/ the
#                                           wasm package, transformers.js and ONNX Runtime Web's WebGPU
#                                           build, the bench models' layout; with BASELINE=REV also the
#                                           package as built at commit REV (.chr/webbert-REV)
#   scripts/gpu/prepare.sh train      .train/  the release CLI (as shipped and with `--features autotune`)
#                                           and the tokenizer; .train1/, .train2/, …  the corpus
#                                           (data/corpus, from scripts/corpus.sh) in parts to
#                                           park (scripts/gpu/train.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
target_dir="${CARGO_TARGET_DIR:-target}"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
for d in /.gl/ /.gpu/ '/.chr*/' '/.train*/'; do
  grep -qxF "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"
done
# Parts that fit one call beside the tracked tree (each call's working tree must stay under 64 MiB; the
# shipped q8 model alone is 26 MB), with 2 MiB to spare.
part_bytes() {
  local tree
  tree=$(git ls-files -z | xargs -0 cat | wc -c)
  echo $(( 62 * 1048576 - tree ))
}

apt_amd64() {
  mkdir -p /tmp/amd64/partial
  local o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  [ -n "$(ls /tmp/amd64/*Packages* 2>/dev/null)" ] || apt-get $o update -qq
  apt-get $o download "$@"
}

native() {
  rm -rf .gl .gpu && mkdir -p .gl .gpu/bin .gpu/vk/lib
  (cd .gl && apt_amd64 libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
  (cd .gpu/vk && apt_amd64 vulkan-tools)
  for l in libwayland-client.so.0 libxcb.so.1 libX11.so.6 libXau.so.6 libXdmcp.so.6 libbsd.so.0 libmd.so.0 libffi.so.8; do
    cp -L "/lib/x86_64-linux-gnu/$l" .gpu/vk/lib/
  done
  python3 scripts/gpu/make_models.py spec www/models .gpu/models
  # First: the older build writes the same files in the target folder, so this checkout's is built after it.
  [ -z "${BASELINE:-}" ] || native_baseline "$BASELINE"
  cargo build --release --bin webbert
  bench=$(bench_binary)
  for pair in "$target_dir/release/webbert:webbert" "$bench:native-bench"; do
    cp "${pair%%:*}" "/tmp/${pair##*:}" && strip "/tmp/${pair##*:}"
    xz -6 -T2 -c "/tmp/${pair##*:}" > ".gpu/bin/${pair##*:}.xz"
  done
  if [ -n "${BASELINE:-}" ] && cmp -s /tmp/native-bench "/tmp/native-bench-$BASELINE"; then
    echo "prepare.sh: the bench at $BASELINE came out the same as this checkout's" >&2
    exit 1
  fi
  du -sh .gl .gpu
}

# The native bench built in the current directory's checkout: its executable's path, as cargo reports it.
bench_binary() {
  cargo bench --bench native --no-run --message-format=json |
    python3 -c 'import json, sys; print([m["executable"] for m in map(json.loads, sys.stdin)
      if m.get("executable") and m["target"]["name"] == "native"][0])'
}

# BASELINE=REV: the native bench as built at commit REV, as .gpu/bin/native-bench-REV (native.sh's `baseline`
# step runs it and this build's in turns on the large batches, so a change is measured against what came before).
# Built in a worktree, into the same target folder (its dependencies are built already).
native_baseline() {
  worktree_add "$1"
  local target bench
  target=$(realpath "$target_dir")
  bench=$(cd "$worktree" && CARGO_TARGET_DIR="$target" bench_binary)
  cp "$bench" "/tmp/native-bench-$1" && strip "/tmp/native-bench-$1"
  xz -6 -T2 -c "/tmp/native-bench-$1" > ".gpu/bin/native-bench-$1.xz"
  worktree_remove
}

# Where an older commit is checked out to be built (BASELINE=REV), with this checkout's target folder.
worktree=/tmp/webbert-baseline
worktree_add() {
  rm -rf "$worktree" && git worktree prune && git worktree add -q --detach "$worktree" "$1"
}
# The older build wrote the same files in the target folder as this checkout's, newer than its sources: cargo
# would take them for this checkout's next build, so its sources are touched.
worktree_remove() {
  git worktree remove --force "$worktree"
  touch src/lib.rs
}

chromium() {
  rm -rf .chr .chr[0-9]
  [ -f /tmp/chr.tar.xz ] || chromium_tar
  split -b "$(part_bytes)" -a 1 /tmp/chr.tar.xz /tmp/chr.part.
  local n=1
  for part in /tmp/chr.part.*; do mkdir -p ".chr$n" && mv "$part" ".chr$n/"; n=$((n + 1)); done
  mkdir -p .chr/webbert/js .chr/webbert/pkg .chr/tjs .chr/ort
  python3 scripts/gpu/make_models.py spec www/models .chr/models
  sha256sum /tmp/chr.tar.xz | cut -c1-64 > .chr/chr.sha256
  [ -f www/webbert/pkg/webbert_relaxed_bg.wasm ] || ./scripts/build-wasm.sh
  cp www/webbert/js/* .chr/webbert/js/ && cp www/webbert/pkg/webbert.js .chr/webbert/pkg/
  for wasm in webbert_bg.wasm webbert_relaxed_bg.wasm; do
    xz -6 -c "www/webbert/pkg/$wasm" > ".chr/webbert/pkg/$wasm.xz"
  done
  [ -z "${BASELINE:-}" ] || baseline "$BASELINE"
  [ -d node_modules/@huggingface/transformers ] || \
    npm install --no-save --ignore-scripts --no-audit --no-fund @huggingface/transformers@4.3.1
  cp node_modules/@huggingface/transformers/dist/transformers.min.js .chr/tjs/
  # What transformers.js 4.3.1's WebGPU path loads.
  cp node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.mjs .chr/ort/
  xz -6 -c node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.wasm > .chr/ort/ort-wasm-simd-threaded.asyncify.wasm.xz
  du -sh .chr .chr[0-9]
  echo "device calls: chromium-part.sh with each of $(ls -d .chr[0-9] | tr '\n' ' ')then chromium.sh"
}

# BASELINE=REV: the package as built at commit REV beside this one, as .chr/webbert-REV (chromium.sh runs
# every .chr/webbert* in the same call, so a change is measured against what came before it).
baseline() {
  worktree_add "$1"
  ln -s "$PWD/node_modules" "$worktree/node_modules"
  (cd "$worktree" && CARGO_TARGET_DIR="$(realpath "$target_dir")" ./scripts/build-wasm.sh > /dev/null)
  local out=".chr/webbert-$1"
  mkdir -p "$out/js" "$out/pkg"
  cp "$worktree"/js/* "$out/js/" && cp "$worktree/pkg/webbert.js" "$out/pkg/"
  for wasm in webbert_bg.wasm webbert_relaxed_bg.wasm; do xz -6 -c "$worktree/pkg/$wasm" > "$out/pkg/$wasm.xz"; done
  worktree_remove
}

train() {
  rm -rf .train .train[0-9] && mkdir -p .train/tokenizer /tmp/train-stage/data
  local model=www/models/minilm-l6-mlm
  cp $model/tokenizer.json $model/vocab.txt $model/tokenizer_config.json $model/special_tokens_map.json .train/tokenizer/
  # The CLI as shipped, and with burn's autotuned kernels (train.sh times both and trains with the faster).
  for build in webbert webbert-autotune; do
    cargo build --release --bin webbert $([ $build = webbert-autotune ] && echo --features autotune)
    cp "$target_dir/release/webbert" /tmp/$build && strip /tmp/$build && xz -6 -T2 -c /tmp/$build > .train/$build.xz
  done
  cp data/corpus/train.txt data/corpus/heldout.txt /tmp/train-stage/data/
  tar -C /tmp/train-stage -cf - data | xz -9 -T2 > /tmp/train-stage/corpus.tar.xz
  split -b "$(part_bytes)" -a 1 /tmp/train-stage/corpus.tar.xz /tmp/train-stage/corpus.tar.xz.
  local n=1
  for part in /tmp/train-stage/corpus.tar.xz.?; do mkdir -p ".train$n" && cp "$part" ".train$n/"; n=$((n + 1)); done
  (cd /tmp/train-stage && sha256sum corpus.tar.xz.?) > .train/parts.sha256
  rm -rf /tmp/train-stage
  du -sh .train .train[0-9]
}

# Debian's Chromium and the libraries it links, as /tmp/chr.tar.xz (kept: delete it to rebuild).
chromium_tar() {
  local stage=/tmp/chr-stage
  rm -rf "$stage" && mkdir -p "$stage/chromium/locales" "$stage/lib"
  (cd /usr/lib/chromium && cp -a chrome_100_percent.pak chromium chrome_crashpad_handler icudtl.dat libEGL.so \
    libGLESv2.so libvk_swiftshader.so libvulkan.so.1 resources.pak snapshot_blob.bin v8_context_snapshot.bin \
    vk_swiftshader_icd.json "$stage/chromium/" && cp locales/en-US.pak "$stage/chromium/locales/")
  # The shared libraries Chromium links that the device image may lack (not the C runtime's).
  ldd /usr/lib/chromium/chromium | awk '$3 ~ /^\// {print $1, $3}' | while read -r so path; do
    case $so in libc.so.6|libm.so.6|libpthread.so.0|libdl.so.2|librt.so.1|libresolv.so.2|libstdc++.so.6|libgcc_s.so.1|ld-linux*) ;;
      *) cp -L "$path" "$stage/lib/$so" ;; esac
  done
  (cd /usr/lib/x86_64-linux-gnu && cp -L libfreebl3.so libfreebl3.chk libfreeblpriv3.so libfreeblpriv3.chk \
    libnssdbm3.so libnssdbm3.chk libsoftokn3.so libsoftokn3.chk "$stage/lib/")
  tar -C "$stage" -cf - chromium lib | xz -9 -T2 > /tmp/chr.tar.xz.part && mv /tmp/chr.tar.xz.part /tmp/chr.tar.xz
}

"${1:?usage: scripts/gpu/prepare.sh native|chromium|chromium_tar|train}" "${@:2}"
