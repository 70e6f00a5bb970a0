"""A real sentence embedder's vectors from webbert's CLI against transformers + sentence-transformers' recipe.

Run:  python scripts/parity-embeddings.py --model DIR [--backend cpu --backend wgpu]
(DIR in sentence-transformers layout: config.json, tokenizer, model.safetensors, modules.json, 1_Pooling/,
sentence_bert_config.json; the webbert binary from `cargo build --release`.)

For checkpoints too large to commit as fixtures (all-mpnet-base-v2 is 438 MB): prints the smallest cosine and
largest difference over texts of 7 to 500+ tokens (the longest cut at max_seq_length, as sentence-transformers
does).
"""

import argparse
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

TEXTS = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The cat sleeps on the sofa.",
    "Café au lait, naïve résumé — déjà vu!",
    "机器学习很有趣。",
    " ".join(["The quick brown fox jumps over the lazy dog while the band plays on."] * 25),
    " ".join(["Stock markets fell sharply today as investors weighed the news."] * 45),
]


@torch.no_grad()
def reference(model_dir: Path) -> np.ndarray:
    """sentence-transformers' pipeline: cut at max_seq_length, pool as 1_Pooling says, normalise if asked
    (without its files: mean, normalised, the model's positions)."""
    read = lambda name, default: json.loads((model_dir / name).read_text()) if (model_dir / name).exists() else default
    modules = read("modules.json", [{"type": "Pooling", "path": "1_Pooling"}, {"type": "Normalize"}])
    pooling = next(m for m in modules if m["type"].endswith("Pooling"))
    mode = read(f"{pooling['path']}/config.json", {"pooling_mode_mean_tokens": True})
    normalize = any(m["type"].endswith("Normalize") for m in modules)
    max_len = read("sentence_bert_config.json", {}).get("max_seq_length", 512)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    enc = tok(TEXTS, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    hidden = model(**enc).last_hidden_state
    if mode.get("pooling_mode_cls_token"):
        pooled = hidden[:, 0]
    else:
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    if normalize:
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
    print("tokens per text:", enc["attention_mask"].sum(1).tolist())
    return pooled.numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--backend", action="append", default=None, help="cpu (default) and/or wgpu")
    target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    ap.add_argument("--webbert", type=Path, default=target / "release" / "webbert")
    args = ap.parse_args()
    want = reference(args.model)
    for backend in args.backend or ["cpu"]:
        lines = "\n".join(json.dumps(t) for t in TEXTS)
        command = [str(args.webbert), "embed", "--model", str(args.model), "--backend", backend,
                   "--dtype", "fp32", "--jsonl", "-"]
        out = subprocess.run(command, input=lines, capture_output=True, text=True, check=True).stdout
        got = np.array([json.loads(line)["embedding"] for line in out.splitlines()])
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        print(f"{backend}: min cosine {cos.min():.10f}, max abs diff {np.abs(got - want).max():.2e}",
              "per text:", " ".join(f"{d:.1e}" for d in np.abs(got - want).max(1)))


if __name__ == "__main__":
    main()
