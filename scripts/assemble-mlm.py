#!/usr/bin/env python3
"""Assembles the shipped fill-mask model as a Hugging Face BertForMaskedLM with the base's tokenizer, from
what models/ holds. Either the whole model in int8 (model.q8.safetensors, from a run that trained the word
embeddings): widened to an f32 model.safetensors beside it, for PyTorch and the fp32 path. Or a trained
delta (every tensor but the word embeddings, f16) plus the word embeddings cut from the base encoder's
checkpoint, as a sharded checkpoint. Standard library only.

Usage: scripts/assemble-mlm.py BASE_DIR DELTA_DIR OUT_DIR
"""
import array
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


def widen_q8(source, target):
    """Writes every tensor of a q8 safetensors file as F32: an I8 matrix times its `{name}_scale`, one F32
    per block of 32 values of a row (webbert's `Checkpoint::to_q8`); F16 widened; others as they are."""
    header, start = read_header(source)
    header.pop("__metadata__", None)
    raw = source.read_bytes()

    def data(name):
        begin, end = header[name]["data_offsets"]
        return raw[start + begin:start + end]

    tensors = {}
    for name, info in header.items():
        if name.endswith("_scale") and name.removesuffix("_scale") in header:
            continue
        if info["dtype"] == "I8":
            rows, cols = info["shape"]
            blocks = (cols + 31) // 32
            q = array.array("b", data(name))
            scales = array.array("f", data(name + "_scale"))
            values = array.array("f", bytes(4 * rows * cols))
            for r in range(rows):
                for b in range(blocks):
                    s, lo, hi = scales[r * blocks + b], r * cols + 32 * b, r * cols + min(32 * (b + 1), cols)
                    values[lo:hi] = array.array("f", [v * s for v in q[lo:hi]])
            tensors[name] = ("F32", info["shape"], values.tobytes())
        elif info["dtype"] == "F16":
            values = struct.unpack(f"<{len(data(name)) // 2}e", data(name))
            tensors[name] = ("F32", info["shape"], array.array("f", values).tobytes())
        else:
            tensors[name] = (info["dtype"], info["shape"], data(name))
    new_header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape, blob) in tensors.items():
        new_header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
    encoded = json.dumps(new_header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(target, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for _, _, blob in tensors.values():
            f.write(blob)


def main():
    base, delta, out = (Path(p) for p in sys.argv[1:4])
    out.mkdir(parents=True, exist_ok=True)
    if (delta / "model.q8.safetensors").exists():
        for stale in list(out.glob("model-*-of-*.safetensors")) + list(out.glob("model*.safetensors.index.json")):
            stale.unlink()
        shutil.rmtree(out / "onnx", ignore_errors=True)  # the bench's export of the previous weights
        widen_q8(delta / "model.q8.safetensors", out / "model.safetensors")
        copy_files(delta, base, out)
        return
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
    copy_files(delta, base, out)


def copy_files(delta, base, out):
    """The delta's files (config, weights) and the base's tokenizer."""
    for path in delta.iterdir():
        if path.is_file() and path.name != "README.md":
            shutil.copy(path, out / path.name)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (base / name).exists():
            shutil.copy(base / name, out / name)
    print(f"fill-mask model ready in {out}")


if __name__ == "__main__":
    main()
