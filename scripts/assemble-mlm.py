#!/usr/bin/env python3
"""Assembles the shipped fill-mask model: the trained delta in models/ (every tensor but the word
embeddings, f16) plus the word embeddings cut from the base encoder's checkpoint, as a sharded
Hugging Face BertForMaskedLM with the base's tokenizer. Standard library only.

Usage: scripts/assemble-mlm.py BASE_DIR DELTA_DIR OUT_DIR
"""
import json
import shutil
import struct
import sys
from pathlib import Path

WORD_EMBEDDINGS = "bert.embeddings.word_embeddings.weight"


def read_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def main():
    base, delta, out = (Path(p) for p in sys.argv[1:4])
    index = json.loads((delta / "model.safetensors.index.json").read_text())
    base_shard = index["weight_map"][WORD_EMBEDDINGS]
    header, start = read_header(base / "model.safetensors")
    name = next(n for n in (WORD_EMBEDDINGS, WORD_EMBEDDINGS.removeprefix("bert.")) if n in header)
    info = header[name]
    begin, end = info["data_offsets"]
    with open(base / "model.safetensors", "rb") as f:
        f.seek(start + begin)
        data = f.read(end - begin)
    new_header = {WORD_EMBEDDINGS: {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [0, len(data)]},
                  "__metadata__": {"format": "pt"}}
    encoded = json.dumps(new_header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / base_shard, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + data)
    for path in delta.iterdir():
        if path.is_file() and path.name != "README.md":
            shutil.copy(path, out / path.name)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (base / name).exists():
            shutil.copy(base / name, out / name)
    print(f"fill-mask model ready in {out}")


if __name__ == "__main__":
    main()
