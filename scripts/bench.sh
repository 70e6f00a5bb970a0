#!/usr/bin/env bash
# npm run bench: the peer (transformers.js) and the ONNX exports are bench-only, so they are set up here.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[ -d node_modules/@huggingface/transformers ] || \
  npm install --no-save --ignore-scripts --no-audit --no-fund @huggingface/transformers@4.3.1
if [ ! -f www/models/minilm-l6-mlm/onnx/model_fp16.onnx ]; then
  venv="${WEBBERT_REF_VENV:-$HOME/.cache/webbert-ref}"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet -r scripts/requirements.txt onnx onnxscript onnxruntime
  "$venv/bin/python" scripts/export_onnx.py
fi
[ -f www/webbert/pkg/webbert_relaxed_bg.wasm ] || ./scripts/build-wasm.sh
node scripts/bench.mjs
