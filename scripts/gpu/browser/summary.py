#!/usr/bin/env python3
"""`summary.py WEBBERT.json TJS.json`: the browser results of one run as a table, webbert / transformers.js."""
import json
import sys

TOKENS = {"embed1x16": 16, "embed1x128": 128, "embed1x512": 512, "embed8x128": 1024, "embed64x128": 8192,
          "embed256x128": 32768, "fill16": 16, "fill128": 128, "embedvaried": 20, "fillvaried": 20}


def cases(path):
    try:
        rows = json.load(open(path))
    except (OSError, ValueError):
        return {}
    return {r["case"]: r for r in rows if "case" in r}


ours, peer = cases(sys.argv[1]), cases(sys.argv[2])
print("| case | webbert ms median [min–max] | transformers.js ms | ratio | webbert tokens/s |")
print("| --- | --- | --- | --- | --- |")
for case, tokens in TOKENS.items():
    a, b = ours.get(case, {}), peer.get(case, {})
    cell = lambda r: f"{r['median']:.2f} [{r['min']:.2f}–{r['max']:.2f}]" if "median" in r else r.get("error", "–")[:60]
    ratio = f"{a['median'] / b['median']:.2f}" if "median" in a and "median" in b else "–"
    rate = f"{tokens / a['median'] * 1e3:.0f}" if "median" in a else "–"
    print(f"| {case} | {cell(a)} | {cell(b)} | {ratio} | {rate} |")
rows = json.load(open(sys.argv[1])) if ours else []
timing = [f"{r['timing']} tokens: submit {r['submitMs']:.1f} + wait {r['waitMs']:.1f} ms" for r in rows if "timing" in r]
tokenize = [f"{r['tokenize']}: {r['ms']:.2f} ms" for r in rows if "tokenize" in r]
if timing:
    print("\nforward alone (timing): " + "; ".join(timing))
if tokenize:
    print("tokenize (worker round trip included; 'a' is the round trip alone): " + "; ".join(tokenize))
