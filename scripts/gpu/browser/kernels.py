#!/usr/bin/env python3
"""`kernels.py PROFILE.json`: scripts/profile's result (every dispatch of one call, timed alone) summed per kernel."""
import json
import sys

result = next(r for r in json.load(open(sys.argv[1])) if "rows" in r)
rows = result["rows"]
by = {}
for r in rows:
    k = by.setdefault(r["kernel"], {"n": 0, "ms": 0.0, "workgroups": []})
    k["n"] += 1
    k["ms"] += r["ms"]
    if r["workgroups"] not in k["workgroups"]:
        k["workgroups"].append(r["workgroups"])
total = sum(k["ms"] for k in by.values())
print(f"\n{result['task']} 1×{result['tokens']}: call {result['forwardMs']:.1f} ms, {len(rows)} dispatches, "
      f"GPU time of the kernels alone {total:.2f} ms")
print("| kernel | dispatches | ms | workgroups |\n| --- | --- | --- | --- |")
for name, k in sorted(by.items(), key=lambda kv: -kv[1]["ms"]):
    print(f"| {name} | {k['n']} | {k['ms']:.3f} | {', '.join(k['workgroups'][:3])} |")
